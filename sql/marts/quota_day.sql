-- Quotas spread evenly over the days of their period, so a quarterly quota can be read against
-- any calendar (months, weeks, a fiscal year starting in any month) by summing days.
SELECT owner_id, day, amount / days AS amount, currency
FROM (
  SELECT owner_id, amount, currency,
    unnest(generate_series(period_start, period_end, INTERVAL '1 day')) AS day,
    array_length(generate_series(period_start, period_end, INTERVAL '1 day')) AS days
  FROM staging.quota
  WHERE period_end >= period_start
) AS spread
