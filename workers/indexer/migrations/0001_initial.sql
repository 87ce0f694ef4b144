-- streamfill indexer: initial schema. Modelled on the Bluesky appview's tables.
-- Key columns use COLLATE "C": revs are TIDs whose byte order is their time order, and
-- byte-wise comparison is also the cheapest.

CREATE TABLE record (
    uri         text COLLATE "C" PRIMARY KEY,
    cid         text,                       -- NULL for a tombstone
    did         text COLLATE "C" NOT NULL,
    collection  text COLLATE "C" NOT NULL,
    rkey        text NOT NULL,
    rev         text COLLATE "C" NOT NULL,  -- repo rev of the commit (or snapshot) that wrote it
    json        jsonb,                      -- NULL for a tombstone
    indexed_at  timestamptz NOT NULL DEFAULT now(),
    tombstone   boolean NOT NULL DEFAULT false
);
-- No index on did: the records of a repo are the uri range 'at://{did}/' .. 'at://{did}0'
-- ('0' follows '/' in byte order), which the primary key serves (RepoMarker sweeps use it).

CREATE TABLE actor (
    did         text COLLATE "C" PRIMARY KEY,
    handle      text,
    handle_seq  bigint,
    status      text,
    active      boolean NOT NULL DEFAULT true,
    status_seq  bigint,
    indexed_at  timestamptz NOT NULL DEFAULT now()
);

-- repo_rev is the rev of the newest *completed* snapshot (RepoMarker): writes older than it are
-- dropped, since that snapshot holds every record that was live at its rev.
CREATE TABLE actor_sync (
    did         text COLLATE "C" PRIMARY KEY,
    commit_cid  text,
    repo_rev    text COLLATE "C",
    indexed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE post (
    uri               text COLLATE "C" PRIMARY KEY,
    cid               text NOT NULL,
    creator           text COLLATE "C" NOT NULL,
    text              text NOT NULL,
    reply_root        text COLLATE "C",
    reply_root_cid    text,
    reply_parent      text COLLATE "C",
    reply_parent_cid  text,
    embed_uri         text COLLATE "C",
    langs             jsonb,
    created_at        text,
    indexed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX post_creator ON post (creator);
CREATE INDEX post_reply_parent ON post (reply_parent) WHERE reply_parent IS NOT NULL;

CREATE TABLE "like" (
    uri          text COLLATE "C" PRIMARY KEY,
    cid          text NOT NULL,
    creator      text COLLATE "C" NOT NULL,
    subject      text COLLATE "C" NOT NULL,
    subject_cid  text,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX like_subject ON "like" (subject);

CREATE TABLE repost (
    uri          text COLLATE "C" PRIMARY KEY,
    cid          text NOT NULL,
    creator      text COLLATE "C" NOT NULL,
    subject      text COLLATE "C" NOT NULL,
    subject_cid  text,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX repost_subject ON repost (subject);

CREATE TABLE follow (
    uri          text COLLATE "C" PRIMARY KEY,
    cid          text NOT NULL,
    creator      text COLLATE "C" NOT NULL,
    subject_did  text COLLATE "C" NOT NULL,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX follow_creator ON follow (creator);
CREATE INDEX follow_subject ON follow (subject_did);

CREATE TABLE actor_block (
    uri          text COLLATE "C" PRIMARY KEY,
    cid          text NOT NULL,
    creator      text COLLATE "C" NOT NULL,
    subject_did  text COLLATE "C" NOT NULL,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actor_block_subject ON actor_block (subject_did);

CREATE TABLE profile (
    uri           text COLLATE "C" PRIMARY KEY,
    cid           text NOT NULL,
    creator       text COLLATE "C" NOT NULL,
    display_name  text,
    description   text,
    avatar_cid    text,
    banner_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_creator ON profile (creator);

CREATE TABLE list (
    uri           text COLLATE "C" PRIMARY KEY,
    cid           text NOT NULL,
    creator       text COLLATE "C" NOT NULL,
    name          text NOT NULL,
    purpose       text NOT NULL,
    description   text,
    avatar_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX list_creator ON list (creator);

CREATE TABLE list_item (
    uri          text COLLATE "C" PRIMARY KEY,
    cid          text NOT NULL,
    creator      text COLLATE "C" NOT NULL,
    subject_did  text COLLATE "C" NOT NULL,
    list_uri     text COLLATE "C" NOT NULL,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX list_item_list ON list_item (list_uri);

CREATE TABLE feed_generator (
    uri           text COLLATE "C" PRIMARY KEY,
    cid           text NOT NULL,
    creator       text COLLATE "C" NOT NULL,
    feed_did      text NOT NULL,
    display_name  text NOT NULL,
    description   text,
    avatar_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_generator_creator ON feed_generator (creator);

-- cid is '' when the label applies to every version of the subject (a NULL cannot be a key).
CREATE TABLE label (
    src         text COLLATE "C" NOT NULL,
    uri         text COLLATE "C" NOT NULL,
    cid         text COLLATE "C" NOT NULL DEFAULT '',
    val         text COLLATE "C" NOT NULL,
    neg         boolean NOT NULL DEFAULT false,
    cts         timestamptz NOT NULL,
    exp         timestamptz,
    indexed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src, uri, cid, val)
);
CREATE INDEX label_uri ON label (uri);

-- Counters are updated in place over and over: free space on every page (fillfactor) lets
-- PostgreSQL make those HOT updates, without a new index entry per increment.
CREATE TABLE post_agg (
    uri           text COLLATE "C" PRIMARY KEY,
    like_count    bigint NOT NULL DEFAULT 0,
    repost_count  bigint NOT NULL DEFAULT 0,
    reply_count   bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);

CREATE TABLE profile_agg (
    did              text COLLATE "C" PRIMARY KEY,
    followers_count  bigint NOT NULL DEFAULT 0,
    follows_count    bigint NOT NULL DEFAULT 0,
    posts_count      bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
