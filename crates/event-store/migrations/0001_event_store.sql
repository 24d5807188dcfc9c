-- The event store: one row per event, ordered per aggregate by version and globally by
-- position; the relayer publishes rows whose published_at is still null.
CREATE TABLE events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type  TEXT        NOT NULL,
    aggregate_id    UUID        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version > 0),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSONB       NOT NULL,
    event_id        UUID        NOT NULL UNIQUE,
    command_id      UUID        NOT NULL,
    correlation_id  UUID        NOT NULL,
    causation_id    UUID        NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at    TIMESTAMPTZ,
    CONSTRAINT events_stream_version UNIQUE (aggregate_id, version)
);

CREATE INDEX events_unpublished ON events (global_position) WHERE published_at IS NULL;

-- The latest snapshot of an aggregate: its state as of `version`.
CREATE TABLE snapshots (
    aggregate_id   UUID        PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    version        BIGINT      NOT NULL,
    state          JSONB       NOT NULL,
    taken_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every command the handler has decided, written in the same transaction as its events (or
-- alone, for a rejection): a command id is processed at most once.
CREATE TABLE processed_commands (
    command_id     UUID        PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    aggregate_id   UUID        NOT NULL,
    outcome        TEXT        NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    reason         TEXT,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the relayer as soon as events are committed (notifications are sent on commit).
CREATE FUNCTION notify_events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events_appended', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_appended AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();
