-- Who asked for every change (the audit trail): the authenticated party and the role it acted
-- in, carried from the client's request through the saga's reactions. NULL for what the
-- Registering context caused, and for everything recorded before.
ALTER TABLE events ADD COLUMN actor_id UUID, ADD COLUMN actor_role TEXT;
ALTER TABLE processed_commands ADD COLUMN actor_id UUID, ADD COLUMN actor_role TEXT;
ALTER TABLE failed_commands ADD COLUMN actor_id UUID, ADD COLUMN actor_role TEXT;
