-- 0003 (issue 19, end users): the Cloud Foundry service plan GUID an instance was created with, recorded by
-- name sync (the CC's relationships.service_plan) and by PUT /instances/{guid}; cf-undo creates a clone with
-- the same plan. NULL: not known (registered before this column, or by a broker that does not send it).
ALTER TABLE instances ADD COLUMN IF NOT EXISTS service_plan_guid text;
