-- The All* queries list aggregates in the order they were created in the event store (the
-- recorded time of their first event), whatever order the projector applied them in: it
-- projects different aggregates at the same time. `position` breaks ties, and keeps the order
-- of the rows already there.
ALTER TABLE issuers ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE investors ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE invoices ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
