-- Every app-view notification also goes out on `torii_app_views_2` as
-- "<app or *> <origin>", where origin is the writing session's `torii.origin`:
-- each torii process sets its own on its connections (empty for other
-- writers). A process skips its own notifications: it applied its changes to
-- its cache when it made them, some as patches its own notification would
-- only undo. `torii_app_views` goes on as before for processes still running
-- an earlier torii.
CREATE OR REPLACE FUNCTION torii_app_view_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r JSONB;
    origin TEXT := coalesce(current_setting('torii.origin', true), '');
BEGIN
    IF TG_ARGV[0] = '*' THEN
        PERFORM pg_notify('torii_app_views', '*');
        PERFORM pg_notify('torii_app_views_2', '* ' || origin);
        RETURN NULL;
    END IF;
    FOREACH r IN ARRAY ARRAY[
        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END
    ] LOOP
        IF r IS NOT NULL AND (TG_NARGS < 2 OR r->>'target_type' = TG_ARGV[1]) THEN
            PERFORM pg_notify('torii_app_views', r->>TG_ARGV[0]);
            PERFORM pg_notify('torii_app_views_2', (r->>TG_ARGV[0]) || ' ' || origin);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
