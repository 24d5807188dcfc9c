-- Where a chain of work spends its time, from the event store (scripts/bench.sh runs it after
-- the bid sagas): for each type of event recorded in the last 10 minutes that is a saga's
-- reaction to another, how long from that event's recording to its own (hop: relay, the
-- broker, the handler's consumer and decision). In milliseconds. A reaction decided in the
-- batch of its cause is recorded in the same transaction, at the same time: 0. The relay's
-- own share is the relayer's histogram `financing_relay_seconds`.
WITH timed AS (
    SELECT e.event_type,
           extract(epoch FROM e.recorded_at - cause.recorded_at) * 1000 AS hop_ms
    FROM events e JOIN events cause ON cause.event_id = e.causation_id
    WHERE e.recorded_at > now() - interval '10 minutes'
)
SELECT event_type, count(*) AS events,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY hop_ms)::numeric, 1) AS hop_p50,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY hop_ms)::numeric, 1) AS hop_p99
FROM timed GROUP BY event_type ORDER BY event_type;
