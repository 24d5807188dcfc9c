-- One table per view. Each row keeps the version of its aggregate it reflects: an event is
-- applied only on top of the version before it. Money is in cents. `position` keeps the order
-- in which rows appeared, which is the order of the All* queries.
CREATE TABLE issuers (
    id       UUID   PRIMARY KEY,
    name     TEXT   NOT NULL,
    version  BIGINT NOT NULL,
    position BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE investors (
    id        UUID   PRIMARY KEY,
    name      TEXT   NOT NULL,
    balance   BIGINT NOT NULL CHECK (balance >= 0),
    reserved  BIGINT NOT NULL CHECK (reserved >= 0),
    committed BIGINT NOT NULL CHECK (committed >= 0),
    version   BIGINT NOT NULL,
    position  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

CREATE TABLE invoices (
    id                  UUID   PRIMARY KEY,
    issuer_id           UUID   NOT NULL,
    asking_price        BIGINT NOT NULL CHECK (asking_price > 0),
    status              TEXT   NOT NULL CHECK (status IN ('AVAILABLE', 'FINANCED', 'APPROVED', 'REVERSED')),
    winning_investor_id UUID,
    winning_bid         BIGINT CHECK (winning_bid > 0),
    version             BIGINT NOT NULL,
    position            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- What became of each command the projector has heard of.
CREATE TABLE command_outcomes (
    command_id     UUID        PRIMARY KEY,
    status         TEXT        NOT NULL CHECK (status IN ('APPLIED', 'REJECTED')),
    reason         TEXT,
    aggregate_type TEXT        NOT NULL,
    aggregate_id   UUID        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
