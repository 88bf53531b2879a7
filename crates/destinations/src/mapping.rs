//! Field mapping, the same for every object: which columns become attributes and under which
//! names (same-name auto-mapping, renames, exclusions), checked against the model's columns.

use sallyport_core::Mapping;
pub use sallyport_core::SettingProblem;
use sallyport_sources::Column;

/// The resolved mapping: for each attribute, the index of its column and its name.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap {
    pub fields: Vec<(usize, String)>,
}

/// Lists the model's columns for an error message.
pub fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds a column the settings name; a problem at `path` when the model lacks it.
pub fn find_column(columns: &[Column], name: &str, path: &[&str]) -> Result<usize, SettingProblem> {
    columns.iter().position(|c| c.name == name).ok_or_else(|| {
        SettingProblem::new(
            path,
            format!(
                "column `{name}` is not in the model (its columns: {})",
                column_list(columns)
            ),
        )
    })
}

/// The problem of a required column setting left out.
pub fn missing(setting: &str) -> SettingProblem {
    SettingProblem::new(&[setting], format!("missing `{setting}`"))
}

/// Finds the columns an object's settings name, collecting what is wrong.
pub struct Lookup<'a> {
    columns: &'a [Column],
    pub problems: Vec<SettingProblem>,
    /// The columns found: not sent as attributes.
    pub used: Vec<usize>,
}

impl<'a> Lookup<'a> {
    pub fn new(columns: &'a [Column]) -> Self {
        Self {
            columns,
            problems: Vec::new(),
            used: Vec::new(),
        }
    }

    /// The column named by `setting`, if the settings name one and the model has it.
    pub fn column(&mut self, setting: &'static str, name: Option<&String>) -> Option<usize> {
        let name = name?;
        match find_column(self.columns, name, &[setting]) {
            Ok(i) => {
                self.used.push(i);
                Some(i)
            }
            Err(p) => {
                self.problems.push(p);
                None
            }
        }
    }

    /// The mapped attributes (besides the used columns), and every problem found.
    pub fn finish(mut self, mapping: &Mapping) -> Result<FieldMap, Vec<SettingProblem>> {
        match resolve(mapping, self.columns, &self.used) {
            Ok(f) if self.problems.is_empty() => Ok(f),
            Ok(_) => Err(self.problems),
            Err(p) => {
                self.problems.extend(p);
                Err(self.problems)
            }
        }
    }
}

/// Resolves `mapping` against the model's columns. `used` are the columns the object's own
/// settings consume (the person's key, the event's id, ...): auto-mapping leaves them out.
pub fn resolve(
    mapping: &Mapping,
    columns: &[Column],
    used: &[usize],
) -> Result<FieldMap, Vec<SettingProblem>> {
    let mut problems = Vec::new();
    for column in mapping.fields.keys() {
        if let Err(p) = find_column(columns, column, &["mapping", "fields", column]) {
            problems.push(p);
        }
    }
    for column in &mapping.exclude {
        if let Err(p) = find_column(columns, column, &["mapping", "exclude"]) {
            problems.push(p);
        }
    }
    let mut fields: Vec<(usize, String)> = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if mapping.exclude.contains(&c.name) {
            continue;
        }
        let renamed = mapping.fields.get(&c.name);
        if renamed.is_none() && (!mapping.auto || used.contains(&i)) {
            continue;
        }
        fields.push((i, renamed.cloned().unwrap_or_else(|| c.name.clone())));
    }
    let mut names: Vec<&str> = fields.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            problems.push(SettingProblem::new(
                &["mapping"],
                format!("two columns map to the attribute `{}`", pair[0]),
            ));
        }
    }
    for (_, name) in &fields {
        if name.is_empty() {
            problems.push(SettingProblem::new(
                &["mapping", "fields"],
                "an attribute name is empty",
            ));
        }
    }
    if problems.is_empty() {
        Ok(FieldMap { fields })
    } else {
        problems.dedup();
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                type_name: "text".into(),
            })
            .collect()
    }

    #[test]
    fn auto_renames_and_exclusions() {
        let columns = cols(&["user_id", "email", "plan", "internal_notes"]);
        let m = Mapping {
            auto: true,
            fields: [("plan".to_string(), "plan_name".to_string())].into(),
            exclude: vec!["internal_notes".into()],
        };
        let f = resolve(&m, &columns, &[0]).unwrap();
        assert_eq!(f.fields, vec![(1, "email".into()), (2, "plan_name".into())]);
    }

    #[test]
    fn without_auto_only_named_fields() {
        let columns = cols(&["id", "a", "b"]);
        let m = Mapping {
            auto: false,
            fields: [("b".to_string(), "bee".to_string())].into(),
            exclude: vec![],
        };
        assert_eq!(
            resolve(&m, &columns, &[0]).unwrap().fields,
            vec![(2, "bee".into())]
        );
    }

    #[test]
    fn unknown_columns_and_collisions() {
        let columns = cols(&["id", "a", "b"]);
        let m = Mapping {
            auto: true,
            fields: [
                ("a".to_string(), "b".to_string()),
                ("zz".to_string(), "z".to_string()),
            ]
            .into(),
            exclude: vec!["nope".into()],
        };
        let problems = resolve(&m, &columns, &[0]).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert!(
            text.contains(&"column `zz` is not in the model (its columns: id, a, b)".to_string()),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("`nope`")));
        assert!(text.contains(&"two columns map to the attribute `b`".to_string()));
        assert_eq!(problems[0].path, vec!["mapping", "fields", "zz"]);
    }
}
