//! Conventions of the files stembatch leaves in an output folder for the user: their mode,
//! and the names of its temporary files (which a killed run may leave behind).

/// Output files are the user's to share: readable by all as far as the umask allows, not
/// the owner-only mode temporary files are created with.
pub fn permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

/// Prefix and suffix of a download's temporary file, beside its destination.
pub const DOWNLOAD_TEMP: (&str, &str) = (".download-", ".part");
/// Prefix and suffix of a report's temporary file, beside `results.csv`.
pub const REPORT_TEMP: (&str, &str) = (".results-", ".csv");

/// Prefix and suffix of the listening page's temporary file, beside `report.html`.
pub const PAGE_TEMP: (&str, &str) = (".report-", ".html");

/// Prefix and suffix of the temporary file of the shard layout, in the state folder.
pub const LAYOUT_TEMP: (&str, &str) = (".shards-", ".json");

/// Prefix and suffix of the temporary file of the page's stems, in the state folder.
pub const PAGE_STEMS_TEMP: (&str, &str) = (".page-stems-", ".json");

/// Whether `name` is one of stembatch's temporary files.
pub fn is_temporary(name: &str) -> bool {
    [
        DOWNLOAD_TEMP,
        REPORT_TEMP,
        PAGE_TEMP,
        LAYOUT_TEMP,
        PAGE_STEMS_TEMP,
    ]
    .iter()
    .any(|(prefix, suffix)| name.starts_with(prefix) && name.ends_with(suffix))
}

/// Whether an I/O error says the disk is full (ENOSPC). Rust maps it to `StorageFull`;
/// the raw code is checked too for an error built from the number alone.
pub fn is_disk_full(cause: &std::io::Error) -> bool {
    /// ENOSPC on Linux and the BSDs (macOS included).
    const ENOSPC: i32 = 28;
    cause.kind() == std::io::ErrorKind::StorageFull
        || (cfg!(unix) && cause.raw_os_error() == Some(ENOSPC))
}
