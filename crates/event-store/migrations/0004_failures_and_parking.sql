-- Client commands that could not be carried out at all (they cannot be decoded, or their
-- aggregate's stream cannot be read): the client learns it from the read model, as FAILED with
-- the reason. Such a command is not processed: sent again once its cause is fixed, it applies.
CREATE TABLE failed_commands (
    command_id   UUID        PRIMARY KEY,
    aggregate_id UUID,
    reason       TEXT        NOT NULL,
    failed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

CREATE INDEX failed_commands_unpublished ON failed_commands (failed_at) WHERE published_at IS NULL;

-- Messages whose effect is owed (a saga reaction, a registration) but cannot happen now: kept
-- as they were received and tried again, with backoff, until they go through.
CREATE TABLE parked_messages (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    message_key     BYTEA,
    payload         BYTEA,
    -- [[name, value], ...] as received (values read as UTF-8).
    headers         JSONB       NOT NULL,
    reason          TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    parked_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);

-- Rejections and failures are relayed as events are: they wake the relayer the same way.
CREATE TRIGGER rejection_recorded AFTER INSERT ON processed_commands
    FOR EACH ROW WHEN (NEW.outcome = 'rejected') EXECUTE FUNCTION notify_events_appended();

CREATE TRIGGER failure_recorded AFTER INSERT ON failed_commands
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events_appended();
