-- Products on deals; discount is 1 - sold / list price where both are known.
SELECT id, opportunity_id, product_2_id, name, quantity, list_price, unit_price, total_price,
  CASE WHEN list_price > 0 AND unit_price IS NOT NULL THEN 1 - unit_price / list_price END AS discount,
  created_date, _version_exact
FROM known.opportunity_line_item
