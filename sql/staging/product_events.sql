-- Self-serve journey events up to the run date.
SELECT event_id, workspace_id, account_id, LOWER(event_name) AS event_name, event_time, plan, channel, country, mrr
FROM known.product_events
