-- A command may also have FAILED outright (it could not be decoded, or its aggregate could not
-- be read); its aggregate is then perhaps unknown. A FAILED command sent again can still apply
-- or be rejected, which replaces the FAILED outcome; nothing replaces APPLIED or REJECTED.
ALTER TABLE command_outcomes DROP CONSTRAINT command_outcomes_status_check;
ALTER TABLE command_outcomes ADD CONSTRAINT command_outcomes_status_check
    CHECK (status IN ('APPLIED', 'REJECTED', 'FAILED'));
ALTER TABLE command_outcomes ALTER COLUMN aggregate_type DROP NOT NULL;
ALTER TABLE command_outcomes ALTER COLUMN aggregate_id DROP NOT NULL;
