-- streamfill indexer: one row per record, keyed by the repo's DID.
--
-- Before: every record was a `record` row (uri key, full JSON) and again a row of its
-- collection's table. After: a record of a collection that has a table lives only there, and
-- that row also holds the record's gate state (rev, cid, tombstone); `record` keeps the
-- records of every other collection. Likes, reposts, follows, blocks and list items keep the
-- lexicon's fields and no JSON; posts, profiles, lists and feed generators keep their JSON.
--
-- Every table of records is keyed by (did, rkey) ((did, collection, rkey) for `record`): every
-- unique key starts with the DID and nothing refers across repos, so each can be partitioned
-- (or distributed, e.g. by Citus) on `did`. A tombstone keeps its key, rev and a NULL content.
--
-- Existing rows are carried over from the old `record` table (its JSON holds everything the
-- new columns need); post_agg / profile_agg, label, actor and actor_sync do not change.

ALTER TABLE record RENAME TO record_0001;
ALTER TABLE post RENAME TO post_0001;
ALTER TABLE "like" RENAME TO like_0001;
ALTER TABLE repost RENAME TO repost_0001;
ALTER TABLE follow RENAME TO follow_0001;
ALTER TABLE actor_block RENAME TO actor_block_0001;
ALTER TABLE profile RENAME TO profile_0001;
ALTER TABLE list RENAME TO list_0001;
ALTER TABLE list_item RENAME TO list_item_0001;
ALTER TABLE feed_generator RENAME TO feed_generator_0001;
-- Their indexes and key constraints would keep the names the new tables want.
DROP TABLE post_0001, like_0001, repost_0001, follow_0001, actor_block_0001, profile_0001,
    list_0001, list_item_0001, feed_generator_0001;
ALTER TABLE record_0001 DROP CONSTRAINT record_pkey;

-- The tables are created without keys and indexes, filled, then keyed (at the end).
-- Key columns use COLLATE "C": revs are TIDs whose byte order is their time order, and
-- byte-wise comparison is also the cheapest.
CREATE TABLE record (
    did         text COLLATE "C" NOT NULL,
    collection  text COLLATE "C" NOT NULL,
    rkey        text COLLATE "C" NOT NULL,
    rev         text COLLATE "C" NOT NULL,  -- repo rev of the commit (or snapshot) that wrote it
    cid         text,                       -- NULL for a tombstone
    tombstone   boolean NOT NULL DEFAULT false,
    json        jsonb,                      -- NULL for a tombstone
    indexed_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR json IS NOT NULL)
);

CREATE TABLE post (
    did               text COLLATE "C" NOT NULL,
    rkey              text COLLATE "C" NOT NULL,
    rev               text COLLATE "C" NOT NULL,
    cid               text,
    tombstone         boolean NOT NULL DEFAULT false,
    json              jsonb,
    text              text,
    reply_root        text COLLATE "C",
    reply_root_cid    text,
    reply_parent      text COLLATE "C",
    reply_parent_cid  text,
    embed_uri         text COLLATE "C",
    langs             jsonb,
    created_at        text,
    indexed_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR (json IS NOT NULL AND text IS NOT NULL))
);

CREATE TABLE "like" (
    did          text COLLATE "C" NOT NULL,
    rkey         text COLLATE "C" NOT NULL,
    rev          text COLLATE "C" NOT NULL,
    cid          text,
    tombstone    boolean NOT NULL DEFAULT false,
    subject      text COLLATE "C",
    subject_cid  text,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR subject IS NOT NULL)
);

CREATE TABLE repost (
    did          text COLLATE "C" NOT NULL,
    rkey         text COLLATE "C" NOT NULL,
    rev          text COLLATE "C" NOT NULL,
    cid          text,
    tombstone    boolean NOT NULL DEFAULT false,
    subject      text COLLATE "C",
    subject_cid  text,
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR subject IS NOT NULL)
);

CREATE TABLE follow (
    did          text COLLATE "C" NOT NULL,
    rkey         text COLLATE "C" NOT NULL,
    rev          text COLLATE "C" NOT NULL,
    cid          text,
    tombstone    boolean NOT NULL DEFAULT false,
    subject_did  text COLLATE "C",
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR subject_did IS NOT NULL)
);

CREATE TABLE actor_block (
    did          text COLLATE "C" NOT NULL,
    rkey         text COLLATE "C" NOT NULL,
    rev          text COLLATE "C" NOT NULL,
    cid          text,
    tombstone    boolean NOT NULL DEFAULT false,
    subject_did  text COLLATE "C",
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR subject_did IS NOT NULL)
);

CREATE TABLE list_item (
    did          text COLLATE "C" NOT NULL,
    rkey         text COLLATE "C" NOT NULL,
    rev          text COLLATE "C" NOT NULL,
    cid          text,
    tombstone    boolean NOT NULL DEFAULT false,
    subject_did  text COLLATE "C",
    list_uri     text COLLATE "C",
    created_at   text,
    indexed_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR (subject_did IS NOT NULL AND list_uri IS NOT NULL))
);

CREATE TABLE profile (
    did           text COLLATE "C" NOT NULL,
    rkey          text COLLATE "C" NOT NULL,
    rev           text COLLATE "C" NOT NULL,
    cid           text,
    tombstone     boolean NOT NULL DEFAULT false,
    json          jsonb,
    display_name  text,
    description   text,
    avatar_cid    text,
    banner_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR json IS NOT NULL)
);

CREATE TABLE list (
    did           text COLLATE "C" NOT NULL,
    rkey          text COLLATE "C" NOT NULL,
    rev           text COLLATE "C" NOT NULL,
    cid           text,
    tombstone     boolean NOT NULL DEFAULT false,
    json          jsonb,
    name          text,
    purpose       text,
    description   text,
    avatar_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR (json IS NOT NULL AND name IS NOT NULL AND purpose IS NOT NULL))
);

CREATE TABLE feed_generator (
    did           text COLLATE "C" NOT NULL,
    rkey          text COLLATE "C" NOT NULL,
    rev           text COLLATE "C" NOT NULL,
    cid           text,
    tombstone     boolean NOT NULL DEFAULT false,
    json          jsonb,
    feed_did      text,
    display_name  text,
    description   text,
    avatar_cid    text,
    created_at    text,
    indexed_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tombstone OR (json IS NOT NULL AND feed_did IS NOT NULL AND display_name IS NOT NULL))
);

-- Carry the rows over, then build the keys and indexes (cheaper than maintaining them row by
-- row). The extractions are those of 0001's per-collection tables.
SET LOCAL maintenance_work_mem = '256MB';
INSERT INTO record (did, collection, rkey, rev, cid, tombstone, json, indexed_at)
SELECT did, collection, rkey, rev, cid, tombstone, json, indexed_at FROM record_0001
WHERE collection NOT IN ('app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.feed.repost',
    'app.bsky.graph.follow', 'app.bsky.graph.block', 'app.bsky.graph.listitem',
    'app.bsky.actor.profile', 'app.bsky.graph.list', 'app.bsky.feed.generator');

INSERT INTO post (did, rkey, rev, cid, tombstone, json, text, reply_root, reply_root_cid, reply_parent,
    reply_parent_cid, embed_uri, langs, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json, json->>'text', json #>> '{reply,root,uri}',
    json #>> '{reply,root,cid}', json #>> '{reply,parent,uri}', json #>> '{reply,parent,cid}',
    coalesce(json #>> '{embed,record,uri}', json #>> '{embed,record,record,uri}'), json->'langs',
    json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.feed.post';

INSERT INTO "like" (did, rkey, rev, cid, tombstone, subject, subject_cid, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json #>> '{subject,uri}', json #>> '{subject,cid}',
    json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.feed.like';

INSERT INTO repost (did, rkey, rev, cid, tombstone, subject, subject_cid, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json #>> '{subject,uri}', json #>> '{subject,cid}',
    json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.feed.repost';

INSERT INTO follow (did, rkey, rev, cid, tombstone, subject_did, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json->>'subject', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.graph.follow';

INSERT INTO actor_block (did, rkey, rev, cid, tombstone, subject_did, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json->>'subject', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.graph.block';

INSERT INTO list_item (did, rkey, rev, cid, tombstone, subject_did, list_uri, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json->>'subject', json->>'list', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.graph.listitem';

INSERT INTO profile (did, rkey, rev, cid, tombstone, json, display_name, description, avatar_cid,
    banner_cid, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json, json->>'displayName', json->>'description',
    json #>> '{avatar,ref,$link}', json #>> '{banner,ref,$link}', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.actor.profile';

INSERT INTO list (did, rkey, rev, cid, tombstone, json, name, purpose, description, avatar_cid,
    created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json, json->>'name', json->>'purpose', json->>'description',
    json #>> '{avatar,ref,$link}', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.graph.list';

INSERT INTO feed_generator (did, rkey, rev, cid, tombstone, json, feed_did, display_name, description,
    avatar_cid, created_at, indexed_at)
SELECT did, rkey, rev, cid, tombstone, json, json->>'did', json->>'displayName', json->>'description',
    json #>> '{avatar,ref,$link}', json->>'createdAt', indexed_at
FROM record_0001 WHERE collection = 'app.bsky.feed.generator';

DROP TABLE record_0001;

-- Every unique key starts with the DID: the partition / distribution column.
ALTER TABLE record ADD PRIMARY KEY (did, collection, rkey);
ALTER TABLE post ADD PRIMARY KEY (did, rkey);
ALTER TABLE "like" ADD PRIMARY KEY (did, rkey);
ALTER TABLE repost ADD PRIMARY KEY (did, rkey);
ALTER TABLE follow ADD PRIMARY KEY (did, rkey);
ALTER TABLE actor_block ADD PRIMARY KEY (did, rkey);
ALTER TABLE list_item ADD PRIMARY KEY (did, rkey);
ALTER TABLE profile ADD PRIMARY KEY (did, rkey);
ALTER TABLE list ADD PRIMARY KEY (did, rkey);
ALTER TABLE feed_generator ADD PRIMARY KEY (did, rkey);
CREATE INDEX post_reply_parent ON post (reply_parent) WHERE reply_parent IS NOT NULL;
CREATE INDEX like_subject ON "like" (subject) WHERE subject IS NOT NULL;
CREATE INDEX repost_subject ON repost (subject) WHERE subject IS NOT NULL;
CREATE INDEX follow_subject ON follow (subject_did) WHERE subject_did IS NOT NULL;
CREATE INDEX actor_block_subject ON actor_block (subject_did) WHERE subject_did IS NOT NULL;
CREATE INDEX list_item_list ON list_item (list_uri) WHERE list_uri IS NOT NULL;
