-- Writes that bypass the service (a psql session, a batch job) still reach
-- the cache: every change to `cats` sends a NOTIFY on the channel
-- `cacheme_cats_<schema>`, which the service listens to as an invalidation
-- source (src/cache/sources.rs). The payload is in cacheme's source message
-- format: one `key <cache key>` line per key.
CREATE FUNCTION notify_cat_change() RETURNS trigger AS $$
DECLARE
    row_id BIGINT;
    owners BIGINT[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_id := OLD.id;
        owners := ARRAY[OLD.owner_id];
    ELSIF TG_OP = 'INSERT' THEN
        row_id := NEW.id;
        owners := ARRAY[NEW.owner_id];
    ELSE
        row_id := NEW.id;
        owners := ARRAY[OLD.owner_id, NEW.owner_id];
    END IF;
    PERFORM pg_notify(
        'cacheme_cats_' || TG_TABLE_SCHEMA,
        'key cat:' || row_id || ':version' || E'\n' ||
        (SELECT string_agg(DISTINCT 'key user:' || o || ':cats', E'\n') FROM unnest(owners) AS o)
    );
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER cats_notify AFTER INSERT OR UPDATE OR DELETE ON cats
    FOR EACH ROW EXECUTE FUNCTION notify_cat_change();
