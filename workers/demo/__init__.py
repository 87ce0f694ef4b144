"""`streamfill demo`: the end-to-end main job."""
