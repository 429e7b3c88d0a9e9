-- The stage catalog.
SELECT id, master_label, sort_order, default_probability, is_closed, is_won, is_active,
  forecast_category_name, _version_exact
FROM known.opportunity_stage
