-- Every recorded change of a deal's stage, amount, close date, probability or forecast category,
-- known as of the run date, oldest first per deal.
-- Held sorted by opportunity_id, then time and id: the ordered passes over it sort nothing.
-- @held-order: opportunity_id, created_date, id
SELECT id, opportunity_id, created_date, created_by_id, stage_name, amount, close_date,
  probability, forecast_category, _version_exact
FROM known.opportunity_history
