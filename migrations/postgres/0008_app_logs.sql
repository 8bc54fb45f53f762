-- App log entries, newest kept up to [logs] max_lines_per_app per app.
CREATE TABLE app_logs (
    id      BIGSERIAL PRIMARY KEY,
    app     TEXT NOT NULL,
    date    BIGINT NOT NULL,
    message TEXT NOT NULL,
    source  TEXT NOT NULL,
    unit    TEXT NOT NULL
);
CREATE INDEX app_logs_by_app ON app_logs(app, id);
