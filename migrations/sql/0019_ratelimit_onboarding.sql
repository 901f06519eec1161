-- Provisioning and rotation share the rate budget across processes (issue 12): a
-- process with onboarding waiters marks onboarding_until at each lease, and a process
-- with only rotation waiters leases its share alone while the mark is fresh.
ALTER TABLE rate_limits ADD COLUMN IF NOT EXISTS onboarding_until timestamptz NOT NULL DEFAULT 'epoch';
