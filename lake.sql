-- hr.employees
CREATE OR REPLACE VIEW "hr__employees" AS
SELECT * FROM read_parquet('/work/main/lake/cdc-data/hr/employees/**/*.parquet', union_by_name = true, hive_partitioning = false);

-- Latest row per primary key (emp_no) in change order; deleted keys and keys a
-- primary-key change moved away (seen in the before image) are left out.
CREATE OR REPLACE VIEW "hr__employees__latest" AS
WITH changes AS (
  SELECT * FROM "hr__employees"
),
keyed AS (
  SELECT *, "emp_no" AS "_key_1", false AS "_moved_away" FROM changes
  UNION ALL
  SELECT *, CAST(json_extract_string("_before_image", '$."emp_no"') AS bigint) AS "_key_1", true AS "_moved_away" FROM changes
  WHERE "_op" = 'update' AND CAST(json_extract_string("_before_image", '$."emp_no"') AS bigint) IS NOT NULL AND (CAST(json_extract_string("_before_image", '$."emp_no"') AS bigint) <> "emp_no")
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY "_key_1" ORDER BY "_dms_timestamp" DESC, "_sequence_number" DESC) AS "_rank" FROM keyed
)
SELECT * EXCLUDE ("_key_1", "_moved_away", "_rank") FROM ranked
WHERE "_rank" = 1 AND NOT "_moved_away" AND "_op" <> 'delete';

-- sales.client
CREATE OR REPLACE VIEW "sales__client" AS
SELECT * FROM read_parquet('/work/main/lake/cdc-data/sales/client/**/*.parquet', union_by_name = true, hive_partitioning = false);

-- Latest row per primary key (client_id) in change order; deleted keys and keys a
-- primary-key change moved away (seen in the before image) are left out.
CREATE OR REPLACE VIEW "sales__client__latest" AS
WITH changes AS (
  SELECT * FROM "sales__client"
),
keyed AS (
  SELECT *, "client_id" AS "_key_1", false AS "_moved_away" FROM changes
  UNION ALL
  SELECT *, CAST(json_extract_string("_before_image", '$."client_id"') AS bigint) AS "_key_1", true AS "_moved_away" FROM changes
  WHERE "_op" = 'update' AND CAST(json_extract_string("_before_image", '$."client_id"') AS bigint) IS NOT NULL AND (CAST(json_extract_string("_before_image", '$."client_id"') AS bigint) <> "client_id")
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY "_key_1" ORDER BY "_dms_timestamp" DESC, "_sequence_number" DESC) AS "_rank" FROM keyed
)
SELECT * EXCLUDE ("_key_1", "_moved_away", "_rank") FROM ranked
WHERE "_rank" = 1 AND NOT "_moved_away" AND "_op" <> 'delete';

-- sales.order_item
CREATE OR REPLACE VIEW "sales__order_item" AS
SELECT * FROM read_parquet('/work/main/lake/cdc-data/sales/order_item/**/*.parquet', union_by_name = true, hive_partitioning = false);

-- Latest row per primary key (so_id, line_no) in change order; deleted keys and keys a
-- primary-key change moved away (seen in the before image) are left out.
CREATE OR REPLACE VIEW "sales__order_item__latest" AS
WITH changes AS (
  SELECT * FROM "sales__order_item"
),
keyed AS (
  SELECT *, "so_id" AS "_key_1", "line_no" AS "_key_2", false AS "_moved_away" FROM changes
  UNION ALL
  SELECT *, CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) AS "_key_1", CAST(json_extract_string("_before_image", '$."line_no"') AS bigint) AS "_key_2", true AS "_moved_away" FROM changes
  WHERE "_op" = 'update' AND CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) IS NOT NULL AND CAST(json_extract_string("_before_image", '$."line_no"') AS bigint) IS NOT NULL AND (CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) <> "so_id" OR CAST(json_extract_string("_before_image", '$."line_no"') AS bigint) <> "line_no")
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY "_key_1", "_key_2" ORDER BY "_dms_timestamp" DESC, "_sequence_number" DESC) AS "_rank" FROM keyed
)
SELECT * EXCLUDE ("_key_1", "_key_2", "_moved_away", "_rank") FROM ranked
WHERE "_rank" = 1 AND NOT "_moved_away" AND "_op" <> 'delete';

-- sales.promo_staging
CREATE OR REPLACE VIEW "sales__promo_staging" AS
SELECT * FROM read_parquet('/work/main/lake/cdc-data/sales/promo_staging/**/*.parquet', union_by_name = true, hive_partitioning = false);

-- Latest row per primary key (promo_code) in change order; deleted keys and keys a
-- primary-key change moved away (seen in the before image) are left out.
CREATE OR REPLACE VIEW "sales__promo_staging__latest" AS
WITH changes AS (
  SELECT * FROM "sales__promo_staging"
  WHERE "_dms_timestamp" > TIMESTAMPTZ '2026-03-14 02:05:11.421562+00'
),
keyed AS (
  SELECT *, "promo_code" AS "_key_1", false AS "_moved_away" FROM changes
  UNION ALL
  SELECT *, json_extract_string("_before_image", '$."promo_code"') AS "_key_1", true AS "_moved_away" FROM changes
  WHERE "_op" = 'update' AND json_extract_string("_before_image", '$."promo_code"') IS NOT NULL AND (json_extract_string("_before_image", '$."promo_code"') <> "promo_code")
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY "_key_1" ORDER BY "_dms_timestamp" DESC, "_sequence_number" DESC) AS "_rank" FROM keyed
)
SELECT * EXCLUDE ("_key_1", "_moved_away", "_rank") FROM ranked
WHERE "_rank" = 1 AND NOT "_moved_away" AND "_op" <> 'delete';

-- sales.sales_order
CREATE OR REPLACE VIEW "sales__sales_order" AS
SELECT * FROM read_parquet('/work/main/lake/cdc-data/sales/sales_order/**/*.parquet', union_by_name = true, hive_partitioning = false);

-- Latest row per primary key (so_id) in change order; deleted keys and keys a
-- primary-key change moved away (seen in the before image) are left out.
CREATE OR REPLACE VIEW "sales__sales_order__latest" AS
WITH changes AS (
  SELECT * FROM "sales__sales_order"
),
keyed AS (
  SELECT *, "so_id" AS "_key_1", false AS "_moved_away" FROM changes
  UNION ALL
  SELECT *, CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) AS "_key_1", true AS "_moved_away" FROM changes
  WHERE "_op" = 'update' AND CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) IS NOT NULL AND (CAST(json_extract_string("_before_image", '$."so_id"') AS bigint) <> "so_id")
),
ranked AS (
  SELECT *, row_number() OVER (PARTITION BY "_key_1" ORDER BY "_dms_timestamp" DESC, "_sequence_number" DESC) AS "_rank" FROM keyed
)
SELECT * EXCLUDE ("_key_1", "_moved_away", "_rank") FROM ranked
WHERE "_rank" = 1 AND NOT "_moved_away" AND "_op" <> 'delete';

