//! Column buffers that turn generated or imported rows into Arrow batches typed by the contract.
//! The demo generator and the importer write raw tables through these, so both land contract types.

use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::Result;
use crate::lake::contract::{ColumnType, Contract, Table};

/// One value of a row, in the order the buffer's columns were declared.
#[derive(Debug, Clone)]
pub enum V {
    N,
    S(String),
    I(i64),
    F(f64),
    B(bool),
    D(NaiveDate),
    T(NaiveDateTime),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::S(s.to_string())
    }
}

impl From<String> for V {
    fn from(s: String) -> V {
        V::S(s)
    }
}

impl From<&String> for V {
    fn from(s: &String) -> V {
        V::S(s.clone())
    }
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::I(v)
    }
}

impl From<f64> for V {
    fn from(v: f64) -> V {
        V::F(v)
    }
}

impl From<bool> for V {
    fn from(v: bool) -> V {
        V::B(v)
    }
}

impl From<NaiveDate> for V {
    fn from(v: NaiveDate) -> V {
        V::D(v)
    }
}

impl From<NaiveDateTime> for V {
    fn from(v: NaiveDateTime) -> V {
        V::T(v)
    }
}

impl<T: Into<V>> From<Option<T>> for V {
    fn from(v: Option<T>) -> V {
        v.map(Into::into).unwrap_or(V::N)
    }
}

enum Col {
    S(StringBuilder),
    I(Int64Builder),
    F(Float64Builder),
    B(BooleanBuilder),
    D(Date32Builder),
    T(TimestampMicrosecondBuilder),
}

/// Rows for one contract table, holding only the columns named at creation.
pub struct RowBuf {
    pub table: Table,
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

impl RowBuf {
    /// A buffer for `table` writing `columns` (each must be a contract or CDC column).
    pub fn new(table: &str, columns: &[&str]) -> RowBuf {
        let table = Contract::builtin().table(table).unwrap_or_else(|| panic!("no contract table {table}")).clone();
        let all = table.all_columns();
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for name in columns {
            let c =
                all.iter().find(|c| c.name == *name).unwrap_or_else(|| panic!("{}.{name} not in contract", table.name));
            fields.push(Field::new(&c.name, c.ty.arrow(), true));
            cols.push(match c.ty {
                ColumnType::String => Col::S(StringBuilder::new()),
                ColumnType::Int => Col::I(Int64Builder::new()),
                ColumnType::Float => Col::F(Float64Builder::new()),
                ColumnType::Bool => Col::B(BooleanBuilder::new()),
                ColumnType::Date => Col::D(Date32Builder::new()),
                ColumnType::Timestamp => Col::T(TimestampMicrosecondBuilder::new()),
            });
        }
        RowBuf { table, schema: Arc::new(Schema::new(fields)), cols, rows: 0 }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row; values must match the declared columns in order and type.
    pub fn push(&mut self, values: Vec<V>) {
        assert_eq!(values.len(), self.cols.len(), "{}: row width", self.table.name);
        for (i, (col, v)) in self.cols.iter_mut().zip(values).enumerate() {
            match (col, v) {
                (Col::S(b), V::N) => b.append_null(),
                (Col::I(b), V::N) => b.append_null(),
                (Col::F(b), V::N) => b.append_null(),
                (Col::B(b), V::N) => b.append_null(),
                (Col::D(b), V::N) => b.append_null(),
                (Col::T(b), V::N) => b.append_null(),
                (Col::S(b), V::S(s)) => b.append_value(s),
                (Col::I(b), V::I(x)) => b.append_value(x),
                (Col::F(b), V::F(x)) => b.append_value(x),
                (Col::F(b), V::I(x)) => b.append_value(x as f64),
                (Col::B(b), V::B(x)) => b.append_value(x),
                (Col::D(b), V::D(d)) => b.append_value((d - EPOCH).num_days() as i32),
                (Col::T(b), V::T(t)) => b.append_value(t.and_utc().timestamp_micros()),
                (Col::T(b), V::D(d)) => {
                    b.append_value(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros())
                }
                (_, v) => panic!("{}: column {} cannot hold {v:?}", self.table.name, self.schema.field(i).name()),
            }
        }
        self.rows += 1;
    }

    /// Takes the buffered rows as one batch, leaving the buffer empty.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Col::S(b) => Arc::new(b.finish()),
                    Col::I(b) => Arc::new(b.finish()),
                    Col::F(b) => Arc::new(b.finish()),
                    Col::B(b) => Arc::new(b.finish()),
                    Col::D(b) => Arc::new(b.finish()),
                    Col::T(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// The buffered rows as Parquet bytes (zstd), leaving the buffer empty.
    pub fn to_parquet(&mut self) -> Result<Vec<u8>> {
        let batch = self.finish()?;
        parquet_bytes(&batch)
    }
}

pub fn parquet_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(256 * 1024))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(buf)
}
