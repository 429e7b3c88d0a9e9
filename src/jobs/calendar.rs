//! How periods are cut for the monthly jobs: grain (week, month, quarter), the first month of the
//! fiscal year and the first day of the week, as SQL period starts.

/// How entry periods are cut: grain, first month of the fiscal year, first day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub grain: Grain,
    pub fiscal_year_start_month: u32,
    pub week_starts_sunday: bool,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar { grain: Grain::Month, fiscal_year_start_month: 1, week_starts_sunday: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grain {
    Week,
    Month,
    Quarter,
}

impl Calendar {
    /// SQL for the start of the period holding timestamp `t`.
    pub fn period_start(&self, t: &str) -> String {
        match self.grain {
            Grain::Week if self.week_starts_sunday => {
                format!("(date_trunc('week', {t} + INTERVAL '1 day') - INTERVAL '1 day')")
            }
            Grain::Week => format!("date_trunc('week', {t})"),
            Grain::Month => format!("date_trunc('month', {t})"),
            Grain::Quarter => {
                let shift = (self.fiscal_year_start_month.clamp(1, 12) - 1) % 3;
                format!("(date_trunc('quarter', {t} - INTERVAL '{shift} months') + INTERVAL '{shift} months')")
            }
        }
    }

    /// Periods per year, for the same-period-last-year comparison.
    pub fn per_year(&self) -> usize {
        match self.grain {
            Grain::Week => 52,
            Grain::Month => 12,
            Grain::Quarter => 4,
        }
    }

    pub fn name(&self) -> &'static str {
        match self.grain {
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
        }
    }
}
