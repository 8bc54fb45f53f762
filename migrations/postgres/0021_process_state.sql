-- Processes are first-class: each process of a version has its own units
-- and status (started, stopped, asleep), as a JSON list in Procfile order:
-- [{"name":"web","units":2,"status":"started"}]. They come from the
-- version's unit count (every process had it) and the app's status; both
-- old columns stay unread.
ALTER TABLE app_versions ADD COLUMN process_state TEXT NOT NULL DEFAULT '[]';
UPDATE app_versions v SET process_state = COALESCE((
    SELECT json_agg(json_build_object('name', p.value, 'units', v.units, 'status', a.status) ORDER BY p.ordinality)::text
    FROM json_array_elements_text(v.processes::json) WITH ORDINALITY AS p(value, ordinality) JOIN apps a ON a.name = v.app
), '[]');
