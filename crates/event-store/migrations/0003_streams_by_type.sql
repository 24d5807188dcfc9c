-- A stream is an aggregate's type and id together: an issuer and an investor that happen to
-- share an id are two streams, and loading one never reads the other's events.
ALTER TABLE events DROP CONSTRAINT events_stream_version;
ALTER TABLE events ADD CONSTRAINT events_stream_version UNIQUE (aggregate_type, aggregate_id, version);

ALTER TABLE snapshots DROP CONSTRAINT snapshots_pkey;
ALTER TABLE snapshots ADD PRIMARY KEY (aggregate_type, aggregate_id);
