-- Addresses of the account that vncfleet did not know when a reconciliation listed
-- them, with when each was first listed (database clock). A create attempt sent after
-- an address was first listed cannot have made it, so such an address is never taken
-- for that attempt's orphan: on a shared account another tool's address of the same
-- spec stays foreign. Rows of addresses a complete listing no longer shows unknown
-- (deleted, or adopted) are removed by the run that sees so.
CREATE TABLE IF NOT EXISTS seen_addresses (
    address       text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
