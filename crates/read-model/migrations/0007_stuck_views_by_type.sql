-- An issuer and an investor may share an id: a stuck view is known by its type and its id.
ALTER TABLE stuck_views DROP CONSTRAINT stuck_views_pkey;
ALTER TABLE stuck_views ADD PRIMARY KEY (aggregate_type, aggregate_id);
