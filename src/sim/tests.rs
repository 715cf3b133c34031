//! The simulator over HTTP on loopback: the submit faults that strike after a task exists,
//! the render cache, and tracks that differ with every parameter and take. Every test is bounded well under 5 s.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Faults, SimConfig, SimHandle};
use crate::api::client::{ApiClient, ApiError, ApiKey};
use crate::api::types::{SubmitInput, SubmitRequest, TASK_MODEL};

/// No limits, short tasks and tracks, and `faults`.
fn config(faults: Faults) -> SimConfig {
    SimConfig {
        task_duration: Duration::from_millis(100),
        track_seconds: 0.5,
        submit_limits: Vec::new(),
        detail_limits: Vec::new(),
        upload_limits: Vec::new(),
        faults,
        ..SimConfig::default()
    }
}

async fn start(faults: Faults) -> SimHandle {
    SimHandle::start(([127, 0, 0, 1], 0).into(), config(faults))
        .await
        .expect("the simulator starts")
}

fn request() -> SubmitRequest {
    SubmitRequest {
        model: TASK_MODEL.into(),
        callback_url: None,
        input: SubmitInput {
            upload_url: "https://example.com/vocals.wav".into(),
            title: "ballad piano".into(),
            tags: "piano".into(),
            negative_tags: String::new(),
            model: None,
            vocal_gender: None,
            style_weight: None,
            weirdness_constraint: None,
            audio_weight: None,
        },
    }
}

fn client(sim: &SimHandle) -> ApiClient {
    ApiClient::new(&sim.url(), ApiKey::new(sim.key())).unwrap()
}

/// Polls `done` every 10 ms until it holds or `limit` has passed since `since`.
async fn holds_by(since: Instant, limit: Duration, done: impl Fn() -> bool) -> bool {
    while !done() {
        if since.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test]
async fn a_client_hanging_up_on_a_slow_submit_answer_leaves_the_task_created() {
    let sim = start(Faults {
        submit_answer_delay: Duration::from_secs(2),
        ..Faults::default()
    })
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = impatient
        .post(format!("{}/api/generate/submit", sim.url()))
        .bearer_auth(sim.key())
        .json(&request())
        .send()
        .await
        .expect_err("the answer comes after the client's timeout");
    assert!(err.is_timeout(), "{err:?}");
    let stats = sim.stats();
    assert_eq!(
        stats.tasks_created, 1,
        "created before the answer was held back"
    );
    assert_eq!(sim.submissions().len(), 1);
    // Counted when axum drops the handler, well before the 2 s delay would have ended.
    let dropped = holds_by(started, Duration::from_millis(1500), || {
        sim.stats().submit_answers_dropped == 1
    })
    .await;
    assert!(dropped, "{:?}", sim.stats());
    assert_eq!(sim.stats().tasks_created, 1);
}

#[tokio::test]
async fn a_patient_client_gets_the_delayed_submit_answer() {
    let delay = Duration::from_millis(300);
    let sim = start(Faults {
        submit_answer_delay: delay,
        ..Faults::default()
    })
    .await;
    let started = Instant::now();
    let data = client(&sim).submit(&request()).await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(sim.submissions()[0].task_id, data.task_id);
    let stats = sim.stats();
    assert_eq!((stats.tasks_created, stats.submit_answers_dropped), (1, 0));
}

#[tokio::test]
async fn an_unreadable_submit_answer_is_a_decode_error_after_the_task_exists() {
    let sim = start(Faults {
        unreadable_submit: 1.0,
        ..Faults::default()
    })
    .await;
    let err = client(&sim).submit(&request()).await.unwrap_err();
    assert!(matches!(err, ApiError::Decode(_)), "{err:?}");
    assert_eq!(sim.stats().tasks_created, 1);

    // On the wire: an HTTP 200 whose code says success, with the task id renamed.
    let answer = reqwest::Client::new()
        .post(format!("{}/api/generate/submit", sim.url()))
        .bearer_auth(sim.key())
        .json(&request())
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["code"], 200);
    assert!(body["data"].get("task_id").is_none(), "{body}");
    assert_eq!(
        body["data"]["taskId"],
        sim.submissions()[1].task_id.as_str()
    );
    let stats = sim.stats();
    assert_eq!((stats.tasks_created, stats.faults), (2, 2));
}

async fn download(sim: &SimHandle, task_id: &str, track: u32) -> (u16, Vec<u8>) {
    let answer = reqwest::Client::new()
        .get(format!("{}/files/{task_id}/{track}.wav", sim.url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_second_download_of_a_track_is_served_from_the_cache() {
    let sim = start(Faults::default()).await;
    let task = client(&sim).submit(&request()).await.unwrap().task_id;
    let (status, first) = download(&sim, &task, 1).await;
    assert_eq!(status, 200);
    assert_eq!(sim.stats().renders, 1);
    let (status, second) = download(&sim, &task, 1).await;
    assert_eq!(status, 200);
    assert_eq!(first, second);
    assert_eq!(Some(first), sim.track_bytes(&task, 1));
    assert_eq!(sim.stats().renders, 1, "served from the cache");
    let (status, other) = download(&sim, &task, 2).await;
    assert_eq!((status, sim.stats().renders), (200, 2));
    assert_ne!(other, second);
}

#[tokio::test]
async fn an_expired_first_download_renders_nothing() {
    let sim = start(Faults {
        expire_first_download: true,
        ..Faults::default()
    })
    .await;
    let task = client(&sim).submit(&request()).await.unwrap().task_id;
    assert_eq!(download(&sim, &task, 1).await.0, 410);
    assert_eq!(sim.stats().renders, 0);
    let (status, bytes) = download(&sim, &task, 1).await;
    assert_eq!((status, sim.stats().renders), (200, 1));
    assert_eq!(Some(bytes), sim.track_bytes(&task, 1));
    assert_eq!(download(&sim, &task, 3).await.0, 404, "no third track");
}

/// The request with one parameter changed.
fn changed(change: fn(&mut SubmitInput)) -> SubmitRequest {
    let mut request = request();
    change(&mut request.input);
    request
}

#[tokio::test]
async fn every_parameter_and_every_take_make_their_own_tracks() {
    // Long enough for a few bars: half a second is one chord, which two seeds can share.
    let sim = SimHandle::start(
        ([127, 0, 0, 1], 0).into(),
        SimConfig {
            track_seconds: 6.0,
            ..config(Faults::default())
        },
    )
    .await
    .expect("the simulator starts");
    let requests = [
        request(),
        changed(|i| i.tags = "jazz, strings".into()),
        changed(|i| i.negative_tags = "piano".into()),
        changed(|i| i.model = Some("V5".into())),
        changed(|i| i.vocal_gender = Some("m".into())),
        changed(|i| i.style_weight = Some(0.9)),
        changed(|i| i.weirdness_constraint = Some(0.6)),
        changed(|i| i.audio_weight = Some(0.2)),
        // A second take: the very same request, another task.
        request(),
    ];
    let client = client(&sim);
    let mut tracks = HashSet::new();
    let mut tasks = Vec::new();
    for request in &requests {
        let task = client.submit(request).await.unwrap().task_id;
        for track in 1..=2 {
            let bytes = sim.track_bytes(&task, track).unwrap();
            assert!(tracks.insert(bytes), "track {track} of {task} repeats one");
        }
        tasks.push(task);
    }
    assert_eq!(tracks.len(), 2 * requests.len());

    // The same task always renders the same bytes, served or rendered afresh, and any
    // simulator renders them from the task id alone.
    let (status, served) = download(&sim, &tasks[3], 2).await;
    assert_eq!(status, 200);
    assert_eq!(Some(&served), sim.track_bytes(&tasks[3], 2).as_ref());
    let fresh = start(Faults::default()).await;
    assert_eq!(download(&fresh, &tasks[3], 2).await, (200, served));
}

/// The submit body of a demo variant whose stem is at `upload_url`, as `run` makes it.
fn demo_request(variant: &crate::variant::Variant, upload_url: &str) -> SubmitRequest {
    let params = &variant.params;
    SubmitRequest {
        model: TASK_MODEL.into(),
        callback_url: None,
        input: SubmitInput {
            upload_url: upload_url.into(),
            title: params.title.clone(),
            tags: params.tags.clone(),
            negative_tags: params.negative_tags.clone(),
            model: Some(params.model.as_str().into()),
            vocal_gender: params.vocal_gender.map(|g| g.as_str().into()),
            style_weight: params.style_weight.map(|w| w.as_f64()),
            weirdness_constraint: params.weirdness_constraint.map(|w| w.as_f64()),
            audio_weight: params.audio_weight.map(|w| w.as_f64()),
        },
    }
}

#[tokio::test]
async fn the_demo_manifest_yields_all_distinct_tracks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests/demo.toml");
    let manifest = crate::manifest::load(&path).expect("the demo manifest loads");
    assert_eq!(manifest.variants.len(), 24);
    let sim = start(Faults::default()).await;
    let client = client(&sim);
    let mut uploads = HashMap::new();
    let mut digests = HashSet::new();
    for variant in manifest.variants.iter() {
        let crate::variant::StemSource::Local(stem) = &variant.stem.source else {
            panic!("the demo's stems are local files");
        };
        if !uploads.contains_key(&stem.path) {
            let name = stem
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let url = client.upload(&stem.path, &name).await.unwrap().file_url;
            uploads.insert(stem.path.clone(), url);
        }
        let request = demo_request(&variant, &uploads[&stem.path]);
        let task = client.submit(&request).await.unwrap().task_id;
        for track in 1..=2 {
            let (status, bytes) = download(&sim, &task, track).await;
            assert_eq!(status, 200);
            digests.insert(format!("{:x}", Sha256::digest(&bytes)));
        }
    }
    assert_eq!(uploads.len(), 3);
    assert_eq!(digests.len(), 48, "every demo track sounds its own");
}

/// Issue 18: the tracks carry the submitted vocal, as the real service's do: a task of an
/// uploaded stem sounds of it (its tracks differ from the same task's without a vocal, by
/// the vocal), and `track_bytes` renders what is served.
#[tokio::test]
async fn the_uploaded_vocal_is_mixed_into_the_tracks() {
    let sim = start(Faults::default()).await;
    let client = client(&sim);
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("voice.wav");
    let rate = 16_000;
    let voice: Vec<f32> = (0..rate)
        .map(|i| {
            (0.6 * (std::f64::consts::TAU * 523.25 * f64::from(i) / f64::from(rate)).sin()) as f32
        })
        .collect();
    std::fs::write(&stem, super::audio::encode_wav(&voice, rate as u32)).unwrap();
    let url = client.upload(&stem, "voice.wav").await.unwrap().file_url;
    let mut with_voice = request();
    with_voice.input.upload_url = url;
    let task = client.submit(&with_voice).await.unwrap().task_id;
    let (status, served) = download(&sim, &task, 1).await;
    assert_eq!(status, 200);
    assert_eq!(Some(served.clone()), sim.track_bytes(&task, 1));
    // The same task rendered without the vocal: its backing alone.
    let backing = super::tracks::TrackSpec::of(&sim.state.config, &task, 1)
        .unwrap()
        .render();
    assert_eq!(served.len(), backing.len(), "the stem's length");
    let samples = |bytes: &[u8]| -> Vec<f32> {
        hound::WavReader::new(std::io::Cursor::new(bytes))
            .unwrap()
            .samples::<i16>()
            .map(|s| f32::from(s.unwrap()) / 32768.0)
            .collect()
    };
    let (mixed, alone) = (samples(&served), samples(&backing));
    // What the mix adds to the (rescaled) backing correlates with the voice.
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    let scale = dot(&mixed, &alone) / dot(&alone, &alone);
    let added: Vec<f32> = mixed
        .iter()
        .zip(&alone)
        .map(|(m, a)| m - a * scale as f32)
        .collect();
    let vocal = super::vocal::vocal_samples(&std::fs::read(&stem).unwrap()).unwrap();
    let n = added.len().min(vocal.len());
    let correlation = dot(&added[..n], &vocal[..n])
        / (dot(&added[..n], &added[..n]).sqrt() * dot(&vocal[..n], &vocal[..n]).sqrt());
    assert!(
        correlation > 0.8,
        "the vocal is in the track: {correlation}"
    );
}
