-- Several torii processes may share this database, and each keeps a cache of
-- app views (host/src/store/views.rs). Every change to what a view shows
-- notifies `torii_app_views` with the app's name, or `*` for changes that can
-- touch any app; notifications go out when the writing transaction commits.
-- Argument 0 names the column holding the app; argument 1, when given, is the
-- `target_type` a row must have (event locks hold locks on other targets too).
CREATE FUNCTION torii_app_view_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r JSONB;
BEGIN
    IF TG_ARGV[0] = '*' THEN
        PERFORM pg_notify('torii_app_views', '*');
        RETURN NULL;
    END IF;
    FOREACH r IN ARRAY ARRAY[
        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END
    ] LOOP
        IF r IS NOT NULL AND (TG_NARGS < 2 OR r->>'target_type' = TG_ARGV[1]) THEN
            PERFORM pg_notify('torii_app_views', r->>TG_ARGV[0]);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER apps_view_changed AFTER INSERT OR UPDATE OR DELETE ON apps
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('name');
CREATE TRIGGER app_teams_view_changed AFTER INSERT OR UPDATE OR DELETE ON app_teams
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
CREATE TRIGGER app_cnames_view_changed AFTER INSERT OR UPDATE OR DELETE ON app_cnames
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('app');
-- Heartbeats update event_locks constantly and change nothing a view shows.
CREATE TRIGGER event_locks_view_changed AFTER INSERT OR DELETE ON event_locks
    FOR EACH ROW EXECUTE FUNCTION torii_app_view_changed('target_value', 'app');
CREATE TRIGGER plans_view_changed AFTER INSERT OR UPDATE OR DELETE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION torii_app_view_changed('*');
CREATE TRIGGER pools_view_changed AFTER INSERT OR UPDATE OR DELETE ON pools
    FOR EACH STATEMENT EXECUTE FUNCTION torii_app_view_changed('*');
