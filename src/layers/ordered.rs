//! Shared tables held in a declared order (`-- @held-order: a, b, c` in a staging SQL file).
//!
//! Six queries of a weekly run read a deal's stage history in one ordered pass (deal, then time,
//! then id: see "One ordered pass" in the README), and each sorted the whole history again: on a
//! million deals, 3.4M rows sorted six times. A table declared with an order is sorted once when it
//! is computed and held in that order as one partition; its scans say so to the planner, which then
//! runs those windows on it without sorting. Declare an order only where the passes read most of
//! the table: the lead history's one pass reads its status changes only, and sorting the whole of
//! it once cost more than sorting those (see sql/staging/lead_history.sql).
//!
//! A held table keeps some text columns as dictionaries and casts them back to the view's type as
//! it is scanned (see `shared::serve`); DataFusion does not count a cast from a dictionary as
//! order-preserving, so the scan is wrapped in `Ordered`, which declares the order on its output.
//! `Ordered` is a leaf to the planner: with the scan as its child, the planner split the held rows
//! into two partitions below it (a memory scan repartitions itself for parallelism), each in order
//! but not the whole, and a sort came back above.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, Statistics,
};

/// The order a staging SQL file declares for its held rows: the columns of its
/// `-- @held-order: a, b, c` line (ascending, nulls last), or none.
pub fn declared(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|l| l.trim().strip_prefix("-- @held-order:"))
        .flat_map(|cols| cols.split(',').map(|c| c.trim().to_lowercase()).filter(|c| !c.is_empty()))
        .collect()
}

/// The ascending, nulls-last ordering of `plan`'s output by the named columns; None when one of
/// them is not in its schema.
fn ordering(schema: &SchemaRef, columns: &[String]) -> Option<LexOrdering> {
    let exprs = columns.iter().map(|c| {
        let at = schema.index_of(c).ok()?;
        let expr: Arc<dyn PhysicalExpr> = Arc::new(Column::new(c, at));
        Some(PhysicalSortExpr::new(expr, SortOptions { descending: false, nulls_first: false }))
    });
    LexOrdering::new(exprs.collect::<Option<Vec<_>>>()?)
}

/// `plan` sorted by the columns, as one partition (each partition sorted, then merged).
pub fn sorted(plan: Arc<dyn ExecutionPlan>, columns: &[String]) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(order) = ordering(&plan.schema(), columns) else {
        return Err(datafusion::error::DataFusionError::Plan(format!(
            "a held order names a column the table does not have: {}",
            columns.join(", ")
        )));
    };
    let partitions = plan.output_partitioning().partition_count();
    let sort: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(order.clone(), plan).with_preserve_partitioning(true));
    if partitions <= 1 {
        return Ok(sort);
    }
    Ok(Arc::new(SortPreservingMergeExec::new(order, sort)))
}

/// A scan of rows held in order: the input, unchanged, with the order declared on its output (a
/// leaf: see the module doc).
#[derive(Debug)]
pub struct Ordered {
    input: Arc<dyn ExecutionPlan>,
    columns: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl Ordered {
    /// Wraps a one-partition scan whose rows are in the order of `columns`: the longest leading
    /// run of them the scan outputs is declared (a scan without the first is returned as is).
    pub fn wrap(input: Arc<dyn ExecutionPlan>, columns: &[String]) -> Arc<dyn ExecutionPlan> {
        let schema = input.schema();
        let present: Vec<String> = columns.iter().take_while(|c| schema.index_of(c).is_ok()).cloned().collect();
        let Some(order) = ordering(&schema, &present) else { return input };
        if input.output_partitioning().partition_count() != 1 {
            return input;
        }
        let mut properties = input.properties().as_ref().clone();
        let mut eq = properties.eq_properties.clone();
        eq.add_ordering(order);
        properties.set_eq_properties(eq);
        Arc::new(Ordered { input, columns: present, properties: Arc::new(properties) })
    }
}

impl DisplayAs for Ordered {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "HeldInOrder: [{}] over ", self.columns.join(", "))?;
        let input = datafusion::physical_plan::displayable(self.input.as_ref()).one_line().to_string();
        write!(f, "{}", input.trim_end())
    }
}

impl ExecutionPlan for Ordered {
    fn name(&self) -> &str {
        "HeldInOrder"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.len() {
            0 => Ok(self),
            n => Err(datafusion::error::DataFusionError::Internal(format!("HeldInOrder has no inputs, got {n}"))),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn statistics_from_inputs(&self, _inputs: &[Arc<Statistics>], args: &StatisticsArgs) -> Result<Arc<Statistics>> {
        StatisticsContext::new().compute(self.input.as_ref(), args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_read_from_its_comment_line() {
        let sql = "-- Every change.\n-- @held-order: opportunity_id, Created_Date , id\nSELECT 1";
        assert_eq!(declared(sql), vec!["opportunity_id", "created_date", "id"]);
        assert!(declared("SELECT 1 -- @held-order: x").is_empty());
    }
}
