-- Rejected commands are relayed too (to financing.outcomes), so that the read model can tell a
-- client what became of a command that produced no event. Applied commands are known from their
-- events and never wait here.
ALTER TABLE processed_commands ADD COLUMN published_at TIMESTAMPTZ;

CREATE INDEX processed_commands_unpublished_rejections ON processed_commands (processed_at)
    WHERE outcome = 'rejected' AND published_at IS NULL;
