-- Issue 24: a drill records the recovery server it started (pid, data directory), so that the reaper can stop
-- it after the drill's process died, and the reaper records what it cleaned.
ALTER TABLE drills ADD COLUMN IF NOT EXISTS server_pid integer;
ALTER TABLE drills ADD COLUMN IF NOT EXISTS server_pgdata text;
ALTER TABLE drills ADD COLUMN IF NOT EXISTS cleanup text;
