-- Deals as they stood on the run date. The opportunity row is only the latest state, so stage,
-- amount, close date, probability and forecast category come from the deal's last
-- opportunity_history row created on or before the as-of date; won/closed follow from that stage
-- in the stage catalog. A deal with no history row known then keeps its own row's values and says
-- so (state_from_history = false): its as-of state is a guess, not a fact. A field the lake's
-- history does not carry at all ({{landed:...}} is false) also comes from the opportunity row.
-- The last change is found in one ordered pass: the history by deal, then time and id (the
-- tie-break), a row kept where the deal differs from the row after (the last row, whose row after
-- is none, too; a row without a deal joins no deal). staging.opportunity_history is held in that
-- order (its @held-order line), so the pass reads it without sorting. A hash aggregate with a
-- first_value per column did the same in 8.7 to 10.5 s on a million deals' 3.4M history rows,
-- against 3.5 to 4.2 s for this when it sorted the rows itself (latest first), 1.2 s now. On a
-- Ballista cluster ({{cluster}} is TRUE) the aggregate runs instead: Ballista 55 drops left rows
-- of a LEFT JOIN whose right side is a window's output (372 deals became 179 to 193 in
-- tests/distributed.rs; an INNER JOIN kept all 372). Each branch is filtered by a constant, and
-- the planner drops the branch whose constant is false before anything runs.
WITH last_change AS (
  SELECT opportunity_id, created_date, stage_name, amount, close_date, probability, forecast_category
  FROM (
    SELECT h.opportunity_id, h.created_date, h.stage_name, h.amount, h.close_date, h.probability,
      h.forecast_category,
      LEAD(h.opportunity_id) OVER w IS DISTINCT FROM h.opportunity_id AS last_row
    FROM staging.opportunity_history AS h
    WHERE h.opportunity_id IS NOT NULL
    WINDOW w AS (ORDER BY h.opportunity_id, h.created_date, h.id)
  ) AS x
  WHERE last_row AND NOT {{cluster}}
  UNION ALL
  SELECT h.opportunity_id,
    first_value(h.created_date ORDER BY h.created_date DESC, h.id DESC) AS created_date,
    first_value(h.stage_name ORDER BY h.created_date DESC, h.id DESC) AS stage_name,
    first_value(h.amount ORDER BY h.created_date DESC, h.id DESC) AS amount,
    first_value(h.close_date ORDER BY h.created_date DESC, h.id DESC) AS close_date,
    first_value(h.probability ORDER BY h.created_date DESC, h.id DESC) AS probability,
    first_value(h.forecast_category ORDER BY h.created_date DESC, h.id DESC) AS forecast_category
  FROM known.opportunity_history AS h
  WHERE {{cluster}}
  GROUP BY h.opportunity_id
)
SELECT
  o.id,
  o.account_id,
  o.owner_id,
  o.name,
  o.type,
  CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.stage_name}} THEN o.stage_name ELSE h.stage_name END AS stage_name,
  CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.amount}} THEN o.amount ELSE h.amount END AS amount,
  o.currency_iso_code,
  CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.close_date}} THEN o.close_date ELSE h.close_date END AS close_date,
  CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.probability}} THEN o.probability ELSE h.probability END AS probability,
  CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.forecast_category}} THEN o.forecast_category ELSE h.forecast_category END AS forecast_category,
  COALESCE(s.is_closed, CASE WHEN h.opportunity_id IS NULL OR h.stage_name = o.stage_name THEN o.is_closed END) AS is_closed,
  COALESCE(s.is_won, CASE WHEN h.opportunity_id IS NULL OR h.stage_name = o.stage_name THEN o.is_won END) AS is_won,
  s.sort_order AS stage_order,
  o.lead_source,
  o.source_class,
  o.deal_type,
  o.campaign_id,
  o.next_step,
  o.created_date,
  h.created_date AS last_changed_at,
  h.opportunity_id IS NOT NULL AS state_from_history,
  o._version_exact
FROM (SELECT *, {{concept:opportunity.source_class}} AS source_class, {{concept:opportunity.deal_type}} AS deal_type
      FROM known.opportunity) AS o
LEFT JOIN last_change AS h ON h.opportunity_id = o.id
LEFT JOIN known.opportunity_stage AS s
  ON s.master_label = CASE WHEN h.opportunity_id IS NULL OR NOT {{landed:opportunity_history.stage_name}} THEN o.stage_name ELSE h.stage_name END
