-- The partition a key's messages go to on a topic of `partitions`, as the relayer reckons it
-- (`partition_for` in the messaging crate: the id as a 128-bit number, modulo the count), here
-- four 32-bit pieces at a time so that bigints never overflow. A relayer claim leaves out the
-- partitions it holds back by this, however many aggregates wait for them.
CREATE FUNCTION partition_for(id uuid, partitions int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (((((((('x' || substr(id::text, 1, 8))::bit(32)::bigint % greatest(partitions, 1))
        * 4294967296 + ('x' || substr(id::text, 10, 4) || substr(id::text, 15, 4))::bit(32)::bigint)
        % greatest(partitions, 1)) * 4294967296
        + ('x' || substr(id::text, 20, 4) || substr(id::text, 25, 4))::bit(32)::bigint)
        % greatest(partitions, 1)) * 4294967296
        + ('x' || substr(id::text, 29, 8))::bit(32)::bigint) % greatest(partitions, 1))::int
$$;
