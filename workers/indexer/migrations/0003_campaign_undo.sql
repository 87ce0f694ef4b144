-- streamfill indexer: undo rows of backfill campaigns (`streamfill campaign plan --undo`).
--
-- `campaign_undo_on` names the campaigns whose snapshots keep undo rows (`campaign apply`
-- registers an --undo campaign there when it starts). For every row such a snapshot changes
-- (a record written or swept into a tombstone, or the repo's actor_sync floor raised), the
-- indexer keeps the row as it was before, once per row and campaign, in the same transaction as
-- the change: `prior` is the whole row as JSON (NULL: there was no row), `campaign_rev` the rev
-- the campaign wrote. `campaign rollback` restores the rows still at `campaign_rev` and leaves
-- the rows live events changed since.

CREATE TABLE campaign_undo_on (
    campaign    text COLLATE "C" PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaign_undo (
    campaign      text COLLATE "C" NOT NULL,
    tbl           text COLLATE "C" NOT NULL,  -- the table: record, post, ..., actor_sync
    did           text COLLATE "C" NOT NULL,
    collection    text COLLATE "C" NOT NULL,  -- '' for actor_sync
    rkey          text COLLATE "C" NOT NULL,  -- '' for actor_sync
    campaign_rev  text COLLATE "C" NOT NULL,
    prior         jsonb,
    kept_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign, tbl, did, collection, rkey)
);
