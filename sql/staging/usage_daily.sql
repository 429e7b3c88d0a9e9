-- Product usage per account and day, up to and including the run date.
SELECT account_id, usage_date, active_users, events, licensed_seats
FROM known.usage_daily
