//! Snowflake's Arrow results: record batches read into the text form of its JSON rowsets, so that
//! both formats go through one conversion. Snowflake sends FIXED as integers (or decimals) with
//! the column's scale, TIMESTAMP as integers at the column's scale or as a struct of `epoch`,
//! `fraction` (and `timezone`), DATE as days, TIME as an integer at its scale, VARIANT as JSON
//! text, BINARY as bytes.

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;

use super::RowType;
use crate::SourceError;

fn failed(m: impl Into<String>) -> SourceError {
    SourceError::Query(m.into())
}

/// Every field nullable, however the stream declared it: Snowflake's timestamp structs carry
/// their nulls in their children.
fn nullable(f: &arrow_schema::Field) -> arrow_schema::Field {
    let data_type = match f.data_type() {
        DataType::Struct(children) => DataType::Struct(
            children
                .iter()
                .map(|c| std::sync::Arc::new(nullable(c)))
                .collect(),
        ),
        other => other.clone(),
    };
    f.clone().with_data_type(data_type).with_nullable(true)
}

/// The record batches of an Arrow IPC stream, read message by message.
fn batches(bytes: &[u8]) -> Result<Vec<RecordBatch>, SourceError> {
    let bad = || failed("an Arrow result is cut short");
    let int = |at: usize| -> Result<i32, SourceError> {
        Ok(i32::from_le_bytes(
            bytes
                .get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ))
    };
    let mut pos = 0;
    let mut schema: Option<std::sync::Arc<arrow_schema::Schema>> = None;
    let mut out = Vec::new();
    while pos + 4 <= bytes.len() {
        let mut len = int(pos)?;
        pos += 4;
        // A continuation marker, then the length.
        if len == -1 {
            len = int(pos)?;
            pos += 4;
        }
        if len <= 0 {
            break;
        }
        let meta = bytes.get(pos..pos + len as usize).ok_or_else(bad)?;
        pos += len as usize;
        let message = arrow_ipc::root_as_message(meta)
            .map_err(|e| failed(format!("an Arrow message does not read: {e}")))?;
        let body_len = message.bodyLength() as usize;
        let body = bytes.get(pos..pos + body_len).ok_or_else(bad)?;
        pos += body_len;
        if let Some(s) = message.header_as_schema() {
            let s = arrow_ipc::convert::fb_to_schema(s);
            let fields: Vec<arrow_schema::Field> = s.fields().iter().map(|f| nullable(f)).collect();
            schema = Some(std::sync::Arc::new(
                arrow_schema::Schema::new_with_metadata(fields, s.metadata().clone()),
            ));
        } else if let Some(batch) = message.header_as_record_batch() {
            let schema = schema
                .clone()
                .ok_or_else(|| failed("an Arrow batch before its schema"))?;
            let buffer = arrow_buffer::Buffer::from(body.to_vec());
            out.push(
                arrow_ipc::reader::read_record_batch(
                    &buffer,
                    batch,
                    schema,
                    &std::collections::HashMap::new(),
                    None,
                    &message.version(),
                )
                .map_err(|e| failed(format!("an Arrow batch does not read: {e}")))?,
            );
        } else {
            return Err(failed(
                "an Arrow message of a kind Snowflake does not send (a dictionary)",
            ));
        }
    }
    Ok(out)
}

/// An Arrow result: its record batches, read into rows a row at a time (a result is held in its
/// compact columnar form, never as rows of text all at once).
pub(crate) struct Batches {
    batches: Vec<RecordBatch>,
    rowtype: std::sync::Arc<Vec<RowType>>,
    batch: usize,
    row: usize,
}

impl Batches {
    pub(crate) fn read(bytes: &[u8], rowtype: &[RowType]) -> Result<Batches, SourceError> {
        Ok(Batches {
            batches: batches(bytes)?,
            rowtype: std::sync::Arc::new(rowtype.to_vec()),
            batch: 0,
            row: 0,
        })
    }

    /// The next row, in the JSON rowset's text form.
    pub(crate) fn next_row(&mut self) -> Option<Result<Vec<Option<String>>, SourceError>> {
        loop {
            let b = self.batches.get(self.batch)?;
            if self.row < b.num_rows() {
                let r = self.row;
                self.row += 1;
                return Some(
                    b.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| cell(c, self.rowtype.get(i), r))
                        .collect(),
                );
            }
            // A batch read to its end is let go.
            self.batches[self.batch] = RecordBatch::new_empty(b.schema());
            self.batch += 1;
            self.row = 0;
        }
    }
}

/// `v` scaled down by `scale` decimal digits, as exact text.
fn scaled(v: i128, scale: i64) -> String {
    if scale <= 0 {
        return v.to_string();
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

/// `units` at `scale` (10^-scale seconds) as `epoch.fraction` with nine digits.
fn epoch_text(units: i128, scale: i64) -> String {
    let per = 10i128.pow(scale.clamp(0, 9) as u32);
    let secs = units.div_euclid(per);
    let nanos = units.rem_euclid(per) * 10i128.pow(9 - scale.clamp(0, 9) as u32);
    format!("{secs}.{nanos:09}")
}

fn int_at(a: &ArrayRef, i: usize) -> Option<i128> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    Some(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i) as i128,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i) as i128,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as i128,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i) as i128,
        DataType::Decimal128(_, _) => a.as_primitive::<Decimal128Type>().value(i),
        _ => return None,
    })
}

/// The cell at row `i` of column `a`, in the JSON rowset's text form.
fn cell(a: &ArrayRef, t: Option<&RowType>, i: usize) -> Result<Option<String>, SourceError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let kind = t.map(|t| t.kind.as_str()).unwrap_or("");
    let scale = t.and_then(|t| t.scale).unwrap_or(0);
    if a.is_null(i) {
        return Ok(None);
    }
    let text = {
        match (kind, a.data_type()) {
            ("boolean", DataType::Boolean) => {
                if a.as_boolean().value(i) { "1" } else { "0" }.to_string()
            }
            ("date", DataType::Date32) => a.as_primitive::<Date32Type>().value(i).to_string(),
            ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz", DataType::Struct(_)) => {
                let s: &StructArray = a.as_struct();
                let field = |name: &str| s.column_by_name(name).cloned();
                let Some(epoch) =
                    field("epoch").and_then(|e| (!e.is_null(i)).then(|| int_at(&e, i)).flatten())
                else {
                    return Ok(None);
                };
                // With a `fraction` field, `epoch` is whole seconds; without one (TIMESTAMP_TZ
                // of a small scale), `epoch` is at the column's scale.
                let mut text = match field("fraction").and_then(|f| int_at(&f, i)) {
                    Some(fraction) => format!("{epoch}.{fraction:09}"),
                    None if field("fraction").is_some() => format!("{epoch}.000000000"),
                    None => epoch_text(epoch, scale),
                };
                if let Some(tz) = field("timezone").and_then(|z| int_at(&z, i)) {
                    text.push_str(&format!(" {tz}"));
                }
                text
            }
            ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" | "time", _) => {
                match int_at(a, i) {
                    Some(units) => epoch_text(units, scale),
                    None => {
                        return Err(failed(format!(
                            "an Arrow {kind} column of type {}",
                            a.data_type()
                        )))
                    }
                }
            }
            ("fixed", DataType::Decimal128(_, s)) => {
                scaled(a.as_primitive::<Decimal128Type>().value(i), *s as i64)
            }
            ("fixed", _) => match int_at(a, i) {
                Some(v) => scaled(v, scale),
                None => match a.data_type() {
                    DataType::Float64 => a.as_primitive::<Float64Type>().value(i).to_string(),
                    other => return Err(failed(format!("an Arrow FIXED column of type {other}"))),
                },
            },
            (_, DataType::Float64) => a.as_primitive::<Float64Type>().value(i).to_string(),
            (_, DataType::Float32) => a.as_primitive::<Float32Type>().value(i).to_string(),
            (_, DataType::Utf8) => a.as_string::<i32>().value(i).to_string(),
            (_, DataType::LargeUtf8) => a.as_string::<i64>().value(i).to_string(),
            (_, DataType::Binary) => a
                .as_binary::<i32>()
                .value(i)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
            (_, DataType::Boolean) => if a.as_boolean().value(i) { "1" } else { "0" }.to_string(),
            (_, DataType::Date32) => a.as_primitive::<Date32Type>().value(i).to_string(),
            _ => match int_at(a, i) {
                Some(v) => scaled(v, scale),
                None => {
                    return Err(failed(format!(
                        "an Arrow column of type {} ({kind}) is not read",
                        a.data_type()
                    )))
                }
            },
        }
    };
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_integers_and_epochs() {
        assert_eq!(scaled(1250, 2), "12.50");
        assert_eq!(scaled(-5, 2), "-0.05");
        assert_eq!(scaled(42, 0), "42");
        assert_eq!(epoch_text(1_704_164_645_123, 3), "1704164645.123000000");
        assert_eq!(epoch_text(-1, 3), "-1.999000000");
    }
}
