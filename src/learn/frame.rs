//! DataFusion record batches handed to Polars through the Arrow C data interface: each column is
//! exported by arrow-rs (`FFI_ArrowArray`, `FFI_ArrowSchema`) and imported by polars-arrow, which
//! takes ownership of the buffers (their release callback travels with them). Nothing is written
//! to a file or rendered as text on the way.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, to_ffi};
use polars::prelude::{Column, DataFrame, Series};

use crate::error::{Error, Result};

fn pe(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("handing the trajectory to Polars (Arrow C data interface): {e}"))
}

/// One arrow-rs array as a Polars series.
fn series(name: &str, array: &dyn Array) -> Result<Series> {
    let (ffi_array, ffi_schema): (FFI_ArrowArray, FFI_ArrowSchema) = to_ffi(&array.to_data()).map_err(pe)?;
    // SAFETY: both crates declare the C data interface's ArrowArray and ArrowSchema as the same
    // #[repr(C)] structs (the layout is fixed by the specification). The schema is only borrowed
    // for the import and released by arrow-rs when `ffi_schema` drops; the array is moved into
    // polars-arrow, whose import owns it and calls its release callback when the series drops.
    let imported = unsafe {
        let schema = &*(std::ptr::from_ref(&ffi_schema).cast::<polars_arrow::ffi::ArrowSchema>());
        let field = polars_arrow::ffi::import_field_from_c(schema).map_err(pe)?;
        let array = std::mem::transmute::<FFI_ArrowArray, polars_arrow::ffi::ArrowArray>(ffi_array);
        polars_arrow::ffi::import_array_from_c(array, field.dtype().clone()).map_err(pe)?
    };
    Series::from_arrow(name.into(), imported).map_err(pe)
}

/// The batches as one Polars frame (columns in schema order, batches as chunks).
pub fn to_polars(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<DataFrame> {
    let mut columns: Vec<Column> = Vec::with_capacity(schema.fields().len());
    for (j, field) in schema.fields().iter().enumerate() {
        let mut whole: Option<Series> = None;
        for b in batches {
            let s = series(field.name(), b.column(j).as_ref())?;
            match whole.as_mut() {
                None => whole = Some(s),
                Some(w) => {
                    w.append(&s).map_err(pe)?;
                }
            }
        }
        let s = match whole {
            Some(s) => s,
            // No rows: an empty series of the column's type, through the same interface.
            None => series(field.name(), datafusion::arrow::array::new_empty_array(field.data_type()).as_ref())?,
        };
        columns.push(s.into());
    }
    DataFrame::new_infer_height(columns).map_err(pe)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use polars::prelude::AnyValue;

    use super::*;

    /// Every type the trajectory carries, with nulls, across two batches: the values Polars reads
    /// are the values DataFusion held.
    #[test]
    fn batches_cross_to_polars_value_for_value() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("d", DataType::Date32, true),
        ]));
        let batch = |ids: Vec<Option<&str>>, n: Vec<Option<i64>>| {
            let len = ids.len();
            let cols: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from(n)),
                Arc::new(Float64Array::from((0..len).map(|i| (i > 0).then_some(i as f64 + 0.5)).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from((0..len).map(|i| Some(i % 2 == 0)).collect::<Vec<_>>())),
                Arc::new(TimestampMicrosecondArray::from(
                    (0..len).map(|i| Some(1_700_000_000_000_000 + i as i64)).collect::<Vec<_>>(),
                )),
                Arc::new(Date32Array::from((0..len).map(|i| Some(19_000 + i as i32)).collect::<Vec<_>>())),
            ];
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let b1 = batch(vec![Some("a"), None, Some("ccc")], vec![Some(1), Some(-2), None]);
        let b2 = batch(vec![Some("dd")], vec![Some(40)]);
        let df = to_polars(&schema, &[b1, b2]).unwrap();
        assert_eq!(df.height(), 4);
        let ids: Vec<Option<String>> =
            df.column("id").unwrap().str().unwrap().iter().map(|v| v.map(str::to_string)).collect();
        assert_eq!(ids, [Some("a".into()), None, Some("ccc".into()), Some("dd".into())]);
        let n: Vec<Option<i64>> = df.column("n").unwrap().i64().unwrap().iter().collect();
        assert_eq!(n, [Some(1), Some(-2), None, Some(40)]);
        let x: Vec<Option<f64>> = df.column("x").unwrap().f64().unwrap().iter().collect();
        assert_eq!(x, [None, Some(1.5), Some(2.5), None]);
        let b: Vec<Option<bool>> = df.column("b").unwrap().bool().unwrap().iter().collect();
        assert_eq!(b, [Some(true), Some(false), Some(true), Some(true)]);
        let t = df.column("t").unwrap().get(2).unwrap();
        assert!(matches!(t, AnyValue::Datetime(v, _, _) if v == 1_700_000_000_000_002), "{t:?}");
        let d = df.column("d").unwrap().get(1).unwrap();
        assert!(matches!(d, AnyValue::Date(19_001)), "{d:?}");
        // No batches at all: an empty frame with the same columns.
        let empty = to_polars(&schema, &[]).unwrap();
        assert_eq!((empty.height(), empty.width()), (0, 6));
    }
}
