//! A DataFusion session over a lake as of a date, with the layers registered in flow order
//! (raw, known, staging, marts, org units); the SQL helpers every job uses to plan declared files.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{ContractProblem, Error, Result};
use crate::lake::Lake;
use crate::lake::contract::Contract;
use crate::lake::inspect::{Landed, inspect};
use crate::lake::profile::{CONCEPTS, Profile, concept_def, concept_sql};
use crate::layers::{AsOf, SCHEMAS, known, marts, org, raw, staging};

/// A SQL session over a lake as of a date: every layer registered by name.
pub struct LakeSession {
    pub ctx: SessionContext,
    pub lake: Lake,
    pub as_of: AsOf,
    pub landed: Vec<Landed>,
    /// The lake's conventions (lake.toml or --profile over data/profiles/default.toml).
    pub profile: Profile,
}

impl LakeSession {
    /// Registers the lake's layers: raw, known, staging, marts and the org units. Tables with
    /// contract problems are registered empty and reported in `landed`; callers that must not run
    /// on a broken lake check `contract_problems()` first. Published outputs and the log are added
    /// by `outputs::open_session`, which is what jobs and queries open.
    pub async fn open_layers(lake: &Lake, as_of: AsOf) -> Result<LakeSession> {
        let contract = Contract::builtin();
        let landed = inspect(lake, contract).await?;
        let profile = Profile::load(lake, lake.profile_file.as_deref()).await?;
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("datafusion", "staging")
            .with_information_schema(true)
            .with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2));
        // With GTM_LOOP_MEMORY_LIMIT set, sorts and joins spill to disk past that budget. Unset, the
        // pool is unbounded: DataFusion 55 cannot spill every merge, so a default cap made large
        // validations fail that fit in memory (see the closing notes of the lake-foundation issue).
        let mut builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(limit) = memory_limit() {
            builder = builder.with_memory_limit(limit, 1.0);
        }
        let runtime = builder.build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        lake.register(&ctx);
        let catalog = ctx.catalog("datafusion").ok_or_else(|| Error::Other("no default catalog".into()))?;
        for (schema, _) in SCHEMAS {
            catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        }
        let session = LakeSession { ctx, lake: lake.clone(), as_of, landed, profile };
        for landed in &session.landed {
            raw::register(&session, landed).await?;
            known::register(&session, landed).await?;
        }
        staging::register(&session).await?;
        marts::register(&session).await?;
        org::register(&session).await?;
        Ok(session)
    }

    /// Plans a declared SQL text (as-of slots filled); an error names where it is declared.
    pub async fn declared(&self, sql: &str, source: &str) -> Result<datafusion::prelude::DataFrame> {
        self.ctx.sql(&self.fill(sql)).await.map_err(|e| Error::Other(format!("{source} does not plan: {e}")))
    }

    /// Runs a declared SQL text and collects its (small) result; errors name where it is declared.
    pub async fn collect_declared(&self, sql: &str, source: &str) -> Result<Vec<RecordBatch>> {
        self.declared(sql, source)
            .await?
            .collect()
            .await
            .map_err(|e| Error::Other(format!("{source} does not run: {e}")))
    }

    /// Replaces a registered view by its rows, computed once: the as-of views (a window over every
    /// CDC version of the table) are otherwise recomputed at every reference, and a query that
    /// reads a staged table in several joins, slice after slice, recomputes it each time. The rows
    /// are the view's own as of this session, so nothing about what is visible changes; they are
    /// spread over the session's partitions so later scans stay parallel. Returns the row count.
    pub async fn materialise(&self, table: &str) -> Result<usize> {
        let df = self.ctx.table(table).await.map_err(|e| Error::Other(format!("cannot materialise {table}: {e}")))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| Error::Other(format!("cannot materialise {table}: {e}")))?;
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let n = self.ctx.state().config().target_partitions().max(1);
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for (i, b) in batches.into_iter().enumerate() {
            partitions[i % n].push(b);
        }
        let mem = datafusion::datasource::MemTable::try_new(schema, partitions)?;
        let _ = self.ctx.deregister_table(table)?;
        self.ctx.register_table(table, Arc::new(mem))?;
        Ok(rows)
    }

    /// Every contract problem found while inspecting the lake.
    pub fn contract_problems(&self) -> Vec<ContractProblem> {
        self.landed.iter().flat_map(|l| l.problems.clone()).collect()
    }

    pub fn landed(&self, table: &str) -> Option<&Landed> {
        self.landed.iter().find(|l| l.table.name == table)
    }

    /// Fills the as-of slots of a SQL text.
    pub fn fill(&self, sql: &str) -> String {
        let date = match self.as_of.0 {
            Some(d) => format!("DATE '{d}'"),
            None => "DATE '2199-12-31'".into(),
        };
        let mut sql = sql.replace("{{as_of_end}}", &self.as_of.end_literal()).replace("{{as_of_date}}", &date);
        // {{landed:table.column}}: whether the lake carries that column at all.
        while let Some(start) = sql.find("{{landed:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let spec = &sql[start + 9..start + len];
            let (table, column) = spec.split_once('.').unwrap_or((spec, ""));
            let landed = self.landed(table).is_some_and(|l| l.field(column).is_some());
            sql.replace_range(start..start + len + 2, if landed { "TRUE" } else { "FALSE" });
        }
        // {{provides:id}}: whether the lake provides that concept.
        while let Some(start) = sql.find("{{provides:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let id = sql[start + 11..start + len].to_string();
            sql.replace_range(start..start + len + 2, if self.provides(&id) { "TRUE" } else { "FALSE" });
        }
        // {{concept:table.id}}: the lake profile's rules for that concept over the table's columns.
        while let Some(start) = sql.find("{{concept:") {
            let Some(len) = sql[start..].find("}}") else { break };
            let spec = sql[start + 10..start + len].to_string();
            let (table, id) = spec.split_once('.').unwrap_or(("", &spec));
            let expr = concept_sql(&self.profile, id, |col| self.landed(table).is_some_and(|l| l.field(col).is_some()));
            sql.replace_range(start..start + len + 2, &format!("({expr})"));
        }
        sql
    }

    /// Whether the lake provides a concept: a profile rule reads a column of a landed table.
    pub fn provides(&self, concept: &str) -> bool {
        let Some(def) = concept_def(concept) else { return false };
        def.tables.iter().any(|t| {
            self.landed(t).is_some_and(|l| {
                l.present() && self.profile.rules(concept).iter().any(|r| l.field(&r.column).is_some())
            })
        })
    }

    /// What of `needs` the lake lacks, each said with how to get it. A need is a contract table
    /// ("task") or a concept of the lake profile ("concept:task_direction").
    pub fn missing(&self, needs: &[String]) -> Vec<String> {
        let present = |t: &str| self.landed(t).is_some_and(|l| l.present());
        let mut out: Vec<String> = Vec::new();
        for need in needs {
            match need.strip_prefix("concept:") {
                Some(id) if !self.provides(id) => match concept_def(id) {
                    // Its table is not landed: that is the gap, said once.
                    Some(def) if !def.tables.iter().any(|t| present(t)) => {
                        let line = format!("{} (not landed)", def.tables.join(" or "));
                        if !out.contains(&line) {
                            out.push(line);
                        }
                    }
                    Some(def) => out.push(format!(
                        "{} (no rule of the lake profile reads a column {} carries; set [[concept.{id}]] in lake.toml)",
                        def.meaning.split(':').next().unwrap_or(id),
                        def.tables.join(" or ")
                    )),
                    None => out.push(format!(
                        "{id} (not a concept; known: {})",
                        CONCEPTS.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                    )),
                },
                Some(_) => {}
                None if need == "opportunity_stage" && !self.profile.stages.is_empty() => {}
                None if !present(need) => {
                    let line = format!("{need} (not landed)");
                    if !out.contains(&line) {
                        out.push(line);
                    }
                }
                None => {}
            }
        }
        out
    }
}

/// The query memory budget from GTM_LOOP_MEMORY_LIMIT ("4G", "512M", bytes), if set.
pub fn memory_limit() -> Option<usize> {
    let v = std::env::var("GTM_LOOP_MEMORY_LIMIT").ok()?;
    let v = v.trim().to_ascii_uppercase();
    let (num, mult) = match v.chars().last() {
        Some('G') => (&v[..v.len() - 1], 1usize << 30),
        Some('M') => (&v[..v.len() - 1], 1usize << 20),
        _ => (v.as_str(), 1usize),
    };
    match num.parse::<f64>() {
        Ok(n) => Some((n * mult as f64) as usize),
        Err(_) => {
            eprintln!("warning: GTM_LOOP_MEMORY_LIMIT={v} is not a size like 4G or 512M; no limit set");
            None
        }
    }
}
