//! A session whose own tables shadow the run's, for work that runs side by side.
//!
//! The deal trajectory runs its steps slice by slice, each step registered under a fixed name
//! (`mart._trajectory_hist`, ...) that the next step's SQL reads, and each slice's inputs under the
//! names of the tables they are cut from (`staging.task`, ...). Two slices can only run at once
//! when each sees its own tables under those names: an overlay context reads every table of the
//! run's session (the shared as-of tables included, computed once for all) except the ones
//! registered in it, which only it sees. Its configuration, functions and memory pool are the
//! run's: the overlay is a name space, not another engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProviderList, SchemaProvider, TableProvider,
};
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

/// A context that reads `base`'s tables and keeps what is registered in it to itself.
pub fn context(base: &SessionContext) -> SessionContext {
    let state = base.state();
    let list = Arc::new(MemoryCatalogProviderList::new());
    let catalogs = state.catalog_list().clone();
    for name in catalogs.catalog_names() {
        if let Some(catalog) = catalogs.catalog(&name) {
            list.register_catalog(name, Arc::new(OverlayCatalog { base: catalog, schemas: Mutex::default() }));
        }
    }
    SessionContext::new_with_state(SessionStateBuilder::new_from_existing(state).with_catalog_list(list).build())
}

#[derive(Debug)]
struct OverlayCatalog {
    base: Arc<dyn CatalogProvider>,
    /// Each schema's overlay, made at its first use and kept (its registrations with it).
    schemas: Mutex<HashMap<String, Arc<OverlaySchema>>>,
}

impl CatalogProvider for OverlayCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.base.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let base = self.base.schema(name)?;
        let mut schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        let overlay = schemas
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(OverlaySchema { base, own: Mutex::default() }))
            .clone();
        Some(overlay)
    }
}

#[derive(Debug)]
struct OverlaySchema {
    base: Arc<dyn SchemaProvider>,
    own: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl OverlaySchema {
    fn own(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn TableProvider>>> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SchemaProvider for OverlaySchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.base.table_names();
        for name in self.own().keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let own = self.own().get(name).cloned();
        match own {
            Some(table) => Ok(Some(table)),
            None => self.base.table(name).await,
        }
    }

    /// Registered here only: the run's table of that name, if any, is shadowed, not replaced.
    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.own().insert(name, table))
    }

    /// Removes this overlay's own table only; the run's shows through again.
    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.own().remove(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.own().contains_key(name) || self.base.table_exist(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    fn table(v: i64) -> Arc<dyn TableProvider> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![v]))]).expect("batch");
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).expect("table"))
    }

    async fn value(ctx: &SessionContext, sql: &str) -> i64 {
        let batches = ctx.sql(sql).await.expect("plans").collect().await.expect("runs");
        batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("BIGINT").value(0)
    }

    #[tokio::test]
    async fn an_overlay_shadows_the_run_s_tables_without_changing_them() {
        let base = SessionContext::new();
        base.catalog("datafusion")
            .expect("default catalog")
            .register_schema("mart", Arc::new(datafusion::catalog::MemorySchemaProvider::new()))
            .expect("schema");
        base.register_table("mart.a", table(1)).expect("register");
        base.register_table("mart.b", table(10)).expect("register");
        let (one, two) = (context(&base), context(&base));
        one.register_table("mart.a", table(2)).expect("register in the overlay");
        two.register_table("mart.a", table(3)).expect("register in the overlay");
        // Each overlay reads its own mart.a and the run's mart.b; the run still reads its own.
        assert_eq!(value(&one, "SELECT v + (SELECT v FROM mart.b) FROM mart.a").await, 12);
        assert_eq!(value(&two, "SELECT v + (SELECT v FROM mart.b) FROM mart.a").await, 13);
        assert_eq!(value(&base, "SELECT v FROM mart.a").await, 1);
        // Dropped from the overlay, the run's table shows through again.
        one.deregister_table("mart.a").expect("deregister");
        assert_eq!(value(&one, "SELECT v FROM mart.a").await, 1);
        assert_eq!(value(&base, "SELECT v FROM mart.a").await, 1);
    }
}
