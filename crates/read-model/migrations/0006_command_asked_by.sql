-- Who asked for each command (the party and its role, from its events or its outcome), so that
-- a party may read the status of its own commands and nobody else's.
ALTER TABLE command_outcomes ADD COLUMN actor_id UUID, ADD COLUMN actor_role TEXT;
