-- Processes are first-class: each process of a version has its own units
-- and status (started, stopped, asleep), as a JSON list in Procfile order:
-- [{"name":"web","units":2,"status":"started"}]. They come from the
-- version's unit count (every process had it) and the app's status; both
-- old columns stay unread.
ALTER TABLE app_versions ADD COLUMN process_state TEXT NOT NULL DEFAULT '[]';
UPDATE app_versions SET process_state = (
    SELECT json_group_array(json_object('name', p.value, 'units', app_versions.units, 'status', a.status))
    FROM json_each(app_versions.processes) p JOIN apps a ON a.name = app_versions.app
);
