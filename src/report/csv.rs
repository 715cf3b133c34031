//! `results.csv`: one row per generated track, one row per variant with no track, in
//! manifest order, with SPEC.md's exact header. Written to any `impl Write`; the file form
//! is atomic (temporary file, fsync, rename) so a crash leaves the last complete file.
//!
//! The quality columns (`decoded_s`, `peak_dbfs`, `lufs`, `qc`) are empty on rows without a
//! track and on tracks journaled before quality control existed; the three measurements
//! are empty for an undecodable track, and a level of digital silence is written `-inf`.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use std::collections::HashMap;

use crate::outcome::{TrackRecord, VariantRecord};
use crate::variant::{Variant, VariantId};

/// The file's name inside the output folder.
pub const FILE_NAME: &str = "results.csv";

/// SPEC.md's header, in order.
pub const HEADER: [&str; 29] = [
    "stem",
    "variant",
    "take",
    "variant_id",
    "status",
    "task_id",
    "track",
    "audio_id",
    "title",
    "tags",
    "negative_tags",
    "model",
    "vocal_gender",
    "style_weight",
    "weirdness_constraint",
    "audio_weight",
    "duration_s",
    "file",
    "bytes",
    "sha256",
    "audio_url",
    "submitted_at",
    "finished_at",
    "attempts",
    "error",
    "decoded_s",
    "peak_dbfs",
    "lufs",
    "qc",
];

/// Writes the header and every row: one per variant of `variants`, in their order, with
/// its record (pending when `records` has none).
pub fn write(
    out: impl Write,
    variants: &[Variant],
    records: &HashMap<VariantId, VariantRecord>,
) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(HEADER)?;
    let pending = VariantRecord::default();
    for variant in variants {
        let record = records.get(&variant.id).unwrap_or(&pending);
        for row in rows_of(variant, record) {
            writer.write_record(row)?;
        }
    }
    writer.flush()?;
    Ok(())
}

/// The rows of one variant: one per track, or one without a track.
pub fn rows_of(variant: &Variant, record: &VariantRecord) -> Vec<Vec<String>> {
    match record.tracks.is_empty() {
        true => vec![row(variant, record, None)],
        false => record
            .tracks
            .iter()
            .map(|track| row(variant, record, Some(track)))
            .collect(),
    }
}

/// Rewrites `DIR/results.csv` atomically.
pub fn write_file(
    dir: &Path,
    variants: &[Variant],
    records: &HashMap<VariantId, VariantRecord>,
) -> std::io::Result<()> {
    write_atomically(dir, |out| Ok(write(out, variants, records)?))
}

/// Rewrites `DIR/results.csv` with what `fill` writes: a temporary file beside it, fsync,
/// rename.
pub fn write_atomically(
    dir: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix(crate::output_files::REPORT_TEMP.0)
        .suffix(crate::output_files::REPORT_TEMP.1)
        .permissions(crate::output_files::permissions())
        .tempfile_in(dir)?;
    {
        let mut buffered = std::io::BufWriter::new(temp.as_file_mut());
        fill(&mut buffered)?;
        buffered.flush()?;
    }
    crate::output_files::persist_durably(temp, &dir.join(FILE_NAME))
}

/// Sets the modification time of the report at `path` to now, and no earlier than that
/// of `journal`: a report found current is as new as the journal that grew since it was
/// written, by this host's clock or by the file server's (`status` and a shard's merge
/// compare the two).
pub fn touch(path: &Path, journal: &Path) -> std::io::Result<()> {
    let journal_time = std::fs::metadata(journal).and_then(|m| m.modified()).ok();
    let now = std::time::SystemTime::now().max(journal_time.unwrap_or(std::time::UNIX_EPOCH));
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(now)
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn row(variant: &Variant, record: &VariantRecord, track: Option<&TrackRecord>) -> Vec<String> {
    let track_field = |get: fn(&TrackRecord) -> String| track.map(get).unwrap_or_default();
    let mut row = Vec::with_capacity(HEADER.len());
    row.extend([
        variant.stem.name.clone(),
        variant.name.clone(),
        variant.take.to_string(),
        variant.id.to_string(),
        record.status.as_str().to_owned(),
        opt(record.task_id.as_deref()),
        opt(track.map(|t| t.number)),
        track_field(|t| t.audio_id.clone()),
    ]);
    row.extend(variant.params.columns());
    row.extend([
        track_field(|t| opt(t.duration_s)),
        track_field(|t| t.file.clone()),
        track_field(|t| t.bytes.to_string()),
        track_field(|t| t.sha256.clone()),
        track_field(|t| t.audio_url.clone()),
        time(record.submitted_at),
        time(record.finished_at),
        record.attempts.to_string(),
        opt(record.error.as_deref()),
    ]);
    let qc = track.and_then(|t| t.qc.as_ref());
    row.extend([
        opt(qc.and_then(|q| q.decoded_s)),
        opt(qc.and_then(|q| q.peak_dbfs)),
        opt(qc.and_then(|q| q.lufs)),
        opt(qc.map(|q| q.verdict)),
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::VariantStatus;
    use crate::qc::{TrackQc, Verdict};

    fn variants() -> Vec<Variant> {
        let text = "[defaults]\ntitle = \"{stem} {variant}\"\ntags = \"a, b\"\nnegative_tags = \"\"\nstyle_weight = 0.65\n\
                    [[stem]]\nurl = \"https://x.com/s.mp3\"\n[[stem.variant]]\nname = \"one\"\n[[stem.variant]]\nname = \"two\"\n";
        crate::manifest::parse(Path::new("m.toml"), text)
            .unwrap()
            .variants
            .to_vec()
    }

    #[test]
    fn the_parameter_columns_sit_where_the_header_names_them() {
        assert_eq!(HEADER[8..16], crate::variant::GenerationParams::COLUMNS);
    }

    #[test]
    fn the_header_is_specs() {
        let spec = "stem,variant,take,variant_id,status,task_id,track,audio_id,title,tags,negative_tags,model,vocal_gender,style_weight,weirdness_constraint,audio_weight,duration_s,file,bytes,sha256,audio_url,submitted_at,finished_at,attempts,error,decoded_s,peak_dbfs,lufs,qc";
        assert_eq!(HEADER.join(","), spec);
    }

    #[test]
    fn one_row_per_track_and_one_per_variant_without_tracks() {
        let variants = variants();
        let at = "2026-11-25T01:02:03Z".parse().unwrap();
        let track = |n: u32, qc: Option<TrackQc>| TrackRecord {
            wave: None,
            number: n,
            modified_ns: None,
            audio_id: format!("a{n}"),
            duration_s: Some(20.0),
            file: format!("audio/s/one-{n}.wav"),
            bytes: 100,
            sha256: "ff".into(),
            audio_url: format!("http://h/{n}.wav"),
            qc,
        };
        let measured = |peak_dbfs, lufs, verdict| TrackQc {
            decoded_s: Some(19.998),
            peak_dbfs: Some(peak_dbfs),
            lufs: Some(lufs),
            verdict,
        };
        let finished = VariantRecord {
            status: VariantStatus::Finished,
            task_id: Some("t1".into()),
            submitted_at: Some(at),
            finished_at: Some(at),
            attempts: 1,
            error: None,
            tracks: vec![
                track(1, Some(measured(-1.94, -16.0, Verdict::Ok))),
                track(
                    2,
                    Some(measured(
                        f64::NEG_INFINITY,
                        f64::NEG_INFINITY,
                        Verdict::Silent,
                    )),
                ),
                track(3, Some(TrackQc::undecodable())),
                track(4, None),
            ],
        };
        let records = HashMap::from([(variants[0].id.clone(), finished)]);
        let mut out = Vec::new();
        write(&mut out, &variants, &records).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], HEADER.join(","));
        assert_eq!(lines.len(), 6);
        let id = &variants[0].id;
        assert_eq!(
            lines[1],
            format!("s,one,1,{id},finished,t1,1,a1,s one,\"a, b\",,V4_5PLUS,,0.65,,,20,audio/s/one-1.wav,100,ff,http://h/1.wav,2026-11-25T01:02:03Z,2026-11-25T01:02:03Z,1,,19.998,-1.94,-16,ok")
        );
        assert!(lines[2].starts_with(&format!("s,one,1,{id},finished,t1,2,a2,")));
        assert!(
            lines[2].ends_with(",1,,19.998,-inf,-inf,silent"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with(",1,,,,,undecodable"), "{}", lines[3]);
        assert!(lines[4].ends_with(",1,,,,,"), "not checked: {}", lines[4]);
        assert!(lines[5].starts_with(&format!("s,two,1,{},pending,,,,s two,", variants[1].id)));
        assert!(lines[5].ends_with(",0,,,,,"), "{}", lines[5]);
        assert!(lines.iter().all(|l| l.split(',').count() >= HEADER.len()));
    }
}
