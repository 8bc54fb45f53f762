-- App autoscale (`/1.9/apps/{app}/units/autoscale`): per process, the units
-- kept between min_units and max_units, aiming at average_cpu (as given:
-- "70%" or "700m"). Version 0: the app's serving version.
CREATE TABLE app_autoscale (
    app         TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    process     TEXT NOT NULL,
    min_units   BIGINT NOT NULL,
    max_units   BIGINT NOT NULL,
    average_cpu TEXT NOT NULL,
    version     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app, process)
);
