//! The sales organisation as of the run date: company -> region -> manager -> seller, from the
//! `user` (manager_id) and `user_role` (parent_role_id) hierarchies, registered as `mart.org_unit`.
//!
//! Rules (documented in data/contract/outputs/kpi.md):
//! - seller: every user (a manager who owns deals is also read as a seller of their own deals);
//! - manager: a first-line manager, i.e. a user with at least one direct report who has no reports;
//!   the unit is the manager's whole subtree (transitive `manager_id`), not one level;
//! - region: the role just under the root of the role tree that the user's role descends from;
//!   users without a role, or with the root role, are in region "(no region)";
//! - company: everyone (the KPI job also counts deals whose owner is not in the user table).
//!
//! Each unit has a head (who owns its interventions): the seller, the manager, the one user who
//! holds the region role and reports outside it, the one user at the root role. Where no single
//! user qualifies, the head is NULL and interventions go to "leadership".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::Result;
use crate::layers::LakeSession;
use crate::layers::columns::strings;

pub const NO_REGION: &str = "(no region)";

/// One membership row: `member_id` (a user) belongs to the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub level: &'static str,
    pub unit_id: String,
    pub unit_name: String,
    pub parent_unit_id: Option<String>,
    pub head_id: Option<String>,
    pub head_name: Option<String>,
    pub member_id: String,
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    name: String,
    manager_id: Option<String>,
    role_id: Option<String>,
}

/// Builds the memberships from users (id, name, manager_id, role_id) and roles (id, name, parent).
fn build(users: Vec<User>, roles: Vec<(String, String, Option<String>)>) -> Vec<Membership> {
    let role_parent: HashMap<&str, Option<&str>> = roles.iter().map(|(id, _, p)| (id.as_str(), p.as_deref())).collect();
    let role_name: HashMap<&str, &str> = roles.iter().map(|(id, n, _)| (id.as_str(), n.as_str())).collect();
    // The depth-1 ancestor (child of a root) of a role; None for a root or an unknown role.
    let region_of_role = |role: &str| -> Option<String> {
        let mut cur = role;
        let mut seen = BTreeSet::new();
        loop {
            if !seen.insert(cur) {
                return None; // a cycle in the role tree: no region rather than a loop
            }
            let parent = (*role_parent.get(cur)?).filter(|p| role_parent.contains_key(p))?;
            let grand = role_parent.get(parent).copied().flatten().filter(|g| role_parent.contains_key(g));
            if grand.is_none() {
                return Some(cur.to_string());
            }
            cur = parent;
        }
    };
    let by_id: HashMap<&str, &User> = users.iter().map(|u| (u.id.as_str(), u)).collect();
    let mut reports: HashMap<&str, Vec<&str>> = HashMap::new();
    for u in &users {
        if let Some(m) = u.manager_id.as_deref().filter(|m| by_id.contains_key(m) && *m != u.id) {
            reports.entry(m).or_default().push(u.id.as_str());
        }
    }
    let subtree = |root: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut seen = BTreeSet::new();
        while let Some(u) = stack.pop() {
            if seen.insert(u) {
                out.push(u.to_string());
                stack.extend(reports.get(u).into_iter().flatten().copied());
            }
        }
        out
    };
    let region: HashMap<&str, Option<String>> =
        users.iter().map(|u| (u.id.as_str(), u.role_id.as_deref().and_then(region_of_role))).collect();
    let region_id = |u: &str| {
        region.get(u).cloned().flatten().map(|r| format!("region:{r}")).unwrap_or_else(|| format!("region:{NO_REGION}"))
    };
    let region_label = |u: &str| {
        region
            .get(u)
            .cloned()
            .flatten()
            .map(|r| role_name.get(r.as_str()).unwrap_or(&r.as_str()).to_string())
            .unwrap_or_else(|| NO_REGION.to_string())
    };
    // Region heads: the one user holding the region role whose manager is outside the region.
    let mut heads: BTreeMap<String, Vec<&User>> = BTreeMap::new();
    for u in &users {
        if let (Some(role), Some(Some(r))) = (u.role_id.as_deref(), region.get(u.id.as_str())) {
            let boss_region = u.manager_id.as_deref().and_then(|m| region.get(m).cloned().flatten());
            if role == r && boss_region.as_deref() != Some(r.as_str()) {
                heads.entry(region_id(&u.id)).or_default().push(u);
            }
        }
    }
    let mut out = Vec::new();
    let first_line: BTreeSet<&str> =
        reports.iter().filter(|(_, rs)| rs.iter().any(|r| !reports.contains_key(r))).map(|(m, _)| *m).collect();
    let mut direct_first_line: HashMap<&str, &str> = HashMap::new();
    for m in &first_line {
        for r in &reports[m] {
            direct_first_line.insert(r, m);
        }
    }
    for u in &users {
        let rid = region_id(&u.id);
        let head = heads.get(&rid).filter(|h| h.len() == 1).map(|h| h[0]);
        out.push(Membership {
            level: "region",
            unit_id: rid.clone(),
            unit_name: region_label(&u.id),
            parent_unit_id: Some("company".into()),
            head_id: head.map(|h| h.id.clone()),
            head_name: head.map(|h| h.name.clone()),
            member_id: u.id.clone(),
        });
        let parent =
            direct_first_line.get(u.id.as_str()).map(|m| format!("manager:{m}")).unwrap_or_else(|| rid.clone());
        out.push(Membership {
            level: "seller",
            unit_id: format!("seller:{}", u.id),
            unit_name: u.name.clone(),
            parent_unit_id: Some(parent),
            head_id: Some(u.id.clone()),
            head_name: Some(u.name.clone()),
            member_id: u.id.clone(),
        });
    }
    for m in &first_line {
        let mu = by_id[m];
        for member in subtree(m) {
            out.push(Membership {
                level: "manager",
                unit_id: format!("manager:{m}"),
                unit_name: mu.name.clone(),
                parent_unit_id: Some(region_id(m)),
                head_id: Some(mu.id.clone()),
                head_name: Some(mu.name.clone()),
                member_id: member,
            });
        }
    }
    out.sort_by(|a, b| (a.level, &a.unit_id, &a.member_id).cmp(&(b.level, &b.unit_id, &b.member_id)));
    out
}

/// The company's head: the one user at a root role who has reports, if exactly one.
fn company_head(users: &[User], roles: &[(String, String, Option<String>)]) -> Option<(String, String)> {
    let known: BTreeSet<&str> = roles.iter().map(|r| r.0.as_str()).collect();
    let roots: BTreeSet<&str> = roles
        .iter()
        .filter(|(_, _, p)| p.as_deref().is_none_or(|p| !known.contains(p)))
        .map(|(id, _, _)| id.as_str())
        .collect();
    let managers: BTreeSet<&str> = users.iter().filter_map(|u| u.manager_id.as_deref()).collect();
    let at_root: Vec<&User> = users
        .iter()
        .filter(|u| u.role_id.as_deref().is_some_and(|r| roots.contains(r)) && managers.contains(u.id.as_str()))
        .collect();
    (at_root.len() == 1).then(|| (at_root[0].id.clone(), at_root[0].name.clone()))
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("level", false),
        s("unit_id", false),
        s("unit_name", false),
        s("parent_unit_id", true),
        s("head_id", true),
        s("head_name", true),
        s("member_id", false),
    ]))
}

/// Reads the as-of users and roles and registers `mart.org_unit`; returns the memberships.
pub async fn memberships(session: &LakeSession) -> Result<Vec<Membership>> {
    let (users, roles) = load(session).await?;
    let mut rows = build(users.clone(), roles.clone());
    let head = company_head(&users, &roles);
    for u in &users {
        rows.push(Membership {
            level: "company",
            unit_id: "company".into(),
            unit_name: "Company".into(),
            parent_unit_id: None,
            head_id: head.as_ref().map(|h| h.0.clone()),
            head_name: head.as_ref().map(|h| h.1.clone()),
            member_id: u.id.clone(),
        });
    }
    Ok(rows)
}

/// Every user as of the run date: (id, name, manager_id), for walking up the reporting line.
pub async fn users(session: &LakeSession) -> Result<Vec<(String, String, Option<String>)>> {
    Ok(load(session).await?.0.into_iter().map(|u| (u.id, u.name, u.manager_id)).collect())
}

async fn load(session: &LakeSession) -> Result<(Vec<User>, Vec<(String, String, Option<String>)>)> {
    let b = session
        .ctx
        .sql("SELECT id, COALESCE(name, id), manager_id, user_role_id FROM staging.\"user\" ORDER BY id")
        .await?
        .collect()
        .await?;
    let mut users = Vec::new();
    for batch in &b {
        let cols: Vec<Vec<Option<String>>> = (0..4).map(|i| strings(batch.column(i))).collect::<Result<_>>()?;
        let [ids, names, managers, roles] = &cols[..] else { unreachable!("four columns") };
        for (((id, name), manager_id), role_id) in ids.iter().zip(names).zip(managers).zip(roles) {
            users.push(User {
                id: id.clone().unwrap_or_default(),
                name: name.clone().unwrap_or_default(),
                manager_id: manager_id.clone(),
                role_id: role_id.clone(),
            });
        }
    }
    let b = session
        .ctx
        .sql("SELECT id, COALESCE(name, id), parent_role_id FROM staging.user_role ORDER BY id")
        .await?
        .collect()
        .await?;
    let mut roles = Vec::new();
    for batch in &b {
        let cols: Vec<Vec<Option<String>>> = (0..3).map(|i| strings(batch.column(i))).collect::<Result<_>>()?;
        let [ids, names, parents] = &cols[..] else { unreachable!("three columns") };
        for ((id, name), parent) in ids.iter().zip(names).zip(parents) {
            roles.push((id.clone().unwrap_or_default(), name.clone().unwrap_or_default(), parent.clone()));
        }
    }
    Ok((users, roles))
}

pub fn batch(rows: &[Membership]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Membership) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            s(&|m| Some(m.level.to_string())),
            s(&|m| Some(m.unit_id.clone())),
            s(&|m| Some(m.unit_name.clone())),
            s(&|m| m.parent_unit_id.clone()),
            s(&|m| m.head_id.clone()),
            s(&|m| m.head_name.clone()),
            s(&|m| Some(m.member_id.clone())),
        ],
    )?)
}

/// Registers `mart.org_unit` on the session.
pub async fn register(session: &LakeSession) -> Result<()> {
    let rows = memberships(session).await?;
    session.register_rows("mart.org_unit", schema(), vec![batch(&rows)?]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, manager: Option<&str>, role: Option<&str>) -> User {
        User {
            id: id.into(),
            name: id.to_uppercase(),
            manager_id: manager.map(Into::into),
            role_id: role.map(Into::into),
        }
    }

    #[test]
    fn regions_from_roles_and_managers_as_subtrees() {
        // cro (root) -> vp (region EMEA) -> m1 (team) -> s1, s2; m1 also manages m2 -> s3.
        let roles = vec![
            ("root".into(), "CRO".into(), None),
            ("emea".into(), "EMEA".into(), Some("root".into())),
            ("team".into(), "EMEA Team".into(), Some("emea".into())),
        ];
        let users = vec![
            user("cro", None, Some("root")),
            user("vp", Some("cro"), Some("emea")),
            user("m1", Some("vp"), Some("team")),
            user("m2", Some("m1"), Some("team")),
            user("s1", Some("m1"), Some("team")),
            user("s2", Some("m1"), Some("team")),
            user("s3", Some("m2"), Some("team")),
            user("loner", None, None),
        ];
        let rows = build(users.clone(), roles.clone());
        let members = |unit: &str| -> Vec<String> {
            rows.iter().filter(|m| m.unit_id == unit).map(|m| m.member_id.clone()).collect()
        };
        // m1 is first-line (s1 has no reports) and sees its whole subtree, m2's seller included.
        assert_eq!(members("manager:m1"), vec!["m1", "m2", "s1", "s2", "s3"]);
        assert_eq!(members("manager:m2"), vec!["m2", "s3"]);
        // vp manages only a manager: not a first-line manager unit.
        assert!(members("manager:vp").is_empty());
        assert_eq!(members("region:emea"), vec!["m1", "m2", "s1", "s2", "s3", "vp"]);
        assert_eq!(members(&format!("region:{NO_REGION}")), vec!["cro", "loner"]);
        let head = rows.iter().find(|m| m.unit_id == "region:emea").unwrap();
        assert_eq!(head.head_id.as_deref(), Some("vp"));
        assert_eq!(head.unit_name, "EMEA");
        let s3 = rows.iter().find(|m| m.unit_id == "seller:s3").unwrap();
        assert_eq!(s3.parent_unit_id.as_deref(), Some("manager:m2"));
        assert_eq!(company_head(&users, &roles), Some(("cro".into(), "CRO".into())));
    }
}
