//! The JSON shapes of API.md, shared by the client and the simulator so the two cannot
//! disagree. Unknown fields are ignored, as the provider may add some.

use serde::{Deserialize, Serialize};

/// The `model` of every submit: the add-instrumental task type.
pub const TASK_MODEL: &str = "add-instrumental";

/// `POST /api/generate/submit` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Always [`TASK_MODEL`].
    pub model: String,
    /// Optional public HTTPS URL the provider notifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The generation parameters.
    pub input: SubmitInput,
}

/// The `input` of a submit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitInput {
    /// URL of the vocal stem.
    pub upload_url: String,
    /// Track title.
    pub title: String,
    /// Styles wanted.
    pub tags: String,
    /// Styles to exclude.
    pub negative_tags: String,
    /// `V4_5PLUS` or `V5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `m` or `f`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocal_gender: Option<String>,
    /// 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style_weight: Option<f64>,
    /// 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weirdness_constraint: Option<f64>,
    /// 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_weight: Option<f64>,
}

/// Every answer's envelope: a body-level `code`, a message, and the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// 200 on success; otherwise an HTTP-like status.
    #[serde(default)]
    pub code: Option<i64>,
    /// Message (some endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Message (other endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The payload.
    #[serde(default = "Option::default")]
    pub data: Option<T>,
    /// An error object (some answers of the provider's family: `error.message`,
    /// `error.type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` object some answers carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    #[serde(default)]
    pub message: Option<String>,
    /// The kind of error, e.g. `invalid_request_error`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl<T> Envelope<T> {
    /// A success envelope.
    pub fn ok(data: T) -> Self {
        Envelope {
            code: Some(200),
            msg: None,
            message: None,
            data: Some(data),
            error: None,
        }
    }

    /// Whichever message field the answer used: `msg`, `message` or `error.message`.
    pub fn text(&self) -> Option<&str> {
        let nested = self.error.as_ref().and_then(|e| e.message.as_deref());
        self.msg.as_deref().or(self.message.as_deref()).or(nested)
    }
}

/// The `data` of a submit answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitData {
    /// The provider's task id.
    pub task_id: String,
    /// Usually `not_started`.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Provider time, no zone.
    #[serde(default)]
    pub created_time: Option<String>,
}

/// A task's state at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Queued.
    NotStarted,
    /// Generating.
    Running,
    /// Done; `files` holds the tracks.
    Finished,
    /// Given up; `error_message` says why.
    Failed,
    /// A status this client does not know: treated as still running.
    #[serde(other)]
    Unknown,
}

/// The `data` of `GET /api/generate/detail/music`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task id.
    pub task_id: String,
    /// Where the task is.
    pub status: TaskStatus,
    /// One entry per track once finished.
    #[serde(default)]
    pub files: Vec<TrackFile>,
    /// Provider time, no zone.
    #[serde(default)]
    pub created_time: Option<String>,
    /// 0..100, when the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Why it failed.
    #[serde(default)]
    pub error_message: Option<String>,
}

/// One generated track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackFile {
    /// The track's id.
    pub audio_id: String,
    /// Where to download it.
    pub audio_url: String,
    /// Its cover image.
    #[serde(default)]
    pub image_url: Option<String>,
    /// The title the provider gave it.
    #[serde(default)]
    pub title: Option<String>,
    /// The tags the provider reports.
    #[serde(default)]
    pub tags: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    /// The prompt (empty for add-instrumental).
    #[serde(default)]
    pub prompt: Option<String>,
}

/// The `data` of `GET /api/user/balance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// The account's e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Credits left.
    pub credits_amount: f64,
}

/// The `data` of `POST /api/common/upload/stream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UploadData {
    /// The provider's id of the file.
    pub file_id: String,
    /// Stored name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
    /// MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// The URL to give as `upload_url`.
    pub file_url: String,
    /// A download URL.
    #[serde(default)]
    pub download_url: Option<String>,
    /// When the file is deleted (provider time, no zone).
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/api-fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn parses_every_provider_fixture() {
        let submit: SubmitRequest = serde_json::from_str(&fixture("submit-request.json")).unwrap();
        assert_eq!(submit.model, TASK_MODEL);
        assert_eq!(submit.input.negative_tags, "heavy metal, fast drums");
        assert_eq!(
            submit.callback_url.as_deref(),
            Some("https://your-domain.com/callback")
        );

        let answer: Envelope<SubmitData> =
            serde_json::from_str(&fixture("submit-response.json")).unwrap();
        assert_eq!(answer.code, Some(200));
        let data = answer.data.unwrap();
        assert_eq!(data.task_id, "task-unified-1757165031-uyujaw3d");
        assert_eq!(data.status, Some(TaskStatus::NotStarted));

        let finished: Envelope<TaskDetail> =
            serde_json::from_str(&fixture("detail-finished.json")).unwrap();
        let finished = finished.data.unwrap();
        assert_eq!(finished.status, TaskStatus::Finished);
        assert_eq!(finished.files.len(), 2);
        assert_eq!(finished.files[1].duration, Some(130.0));
        assert!(finished.files[0].audio_url.ends_with(".mp3"));

        let running: Envelope<TaskDetail> =
            serde_json::from_str(&fixture("detail-running.json")).unwrap();
        let running = running.data.unwrap();
        assert_eq!(
            (running.status, running.progress),
            (TaskStatus::Running, Some(40.0))
        );

        let failed: Envelope<TaskDetail> =
            serde_json::from_str(&fixture("detail-failed.json")).unwrap();
        let failed = failed.data.unwrap();
        assert_eq!(failed.status, TaskStatus::Failed);
        assert_eq!(
            failed.error_message.as_deref(),
            Some("The prompt violates our content policy")
        );

        let balance: Envelope<Balance> =
            serde_json::from_str(&fixture("balance-response.json")).unwrap();
        assert_eq!(balance.data.unwrap().credits_amount, 17276.0);

        let upload: Envelope<UploadData> =
            serde_json::from_str(&fixture("upload-stream-response.json")).unwrap();
        assert_eq!(upload.text(), Some("File uploaded successfully"));
        let upload = upload.data.unwrap();
        assert_eq!(
            upload.file_url,
            "https://storage.vidgo.ai/temp/test-stream/test-stream.png"
        );
        assert_eq!(
            upload.expires_at.as_deref(),
            Some("2026-01-01T13:09:04.731057")
        );
    }

    #[test]
    fn every_fixture_in_the_folder_is_covered() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/api-fixtures");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "balance-response.json",
                "detail-failed.json",
                "detail-finished.json",
                "detail-running.json",
                "submit-request.json",
                "submit-response.json",
                "upload-stream-response.json"
            ],
            "a new fixture needs a parse assertion above"
        );
    }

    #[test]
    fn unknown_statuses_and_fields_are_tolerated() {
        let text =
            r#"{"code":200,"data":{"task_id":"t","status":"queued_again","files":[],"extra":1}}"#;
        let detail: Envelope<TaskDetail> = serde_json::from_str(text).unwrap();
        assert_eq!(detail.data.unwrap().status, TaskStatus::Unknown);
    }

    #[test]
    fn unset_optional_inputs_are_not_sent() {
        let input = SubmitInput {
            upload_url: "u".into(),
            title: "t".into(),
            tags: "".into(),
            negative_tags: "".into(),
            model: Some("V5".into()),
            vocal_gender: None,
            style_weight: Some(0.65),
            weirdness_constraint: None,
            audio_weight: None,
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"upload_url":"u","title":"t","tags":"","negative_tags":"","model":"V5","style_weight":0.65}"#
        );
    }
}
