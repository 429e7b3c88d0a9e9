-- Quotas set on or before the run date.
SELECT owner_id, period_start, period_end, amount, currency, created_date
FROM known.quota
