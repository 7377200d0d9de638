//! The simulator's HJ 212 devices: each simulated site is one monitor with its own MN,
//! speaking HJ 212 as a field device does.
//!
//! - **Frames.** One CN=2011 real-time frame per reading: `DataTime` (local time in the
//!   simulator's zone, the reading's instant), `a34002-Rtd` (PM10) and `a34004-Rtd`
//!   (PM2.5) in µg/m³, each with its `-Flag` (HJ 212-2017/2025 letters; the HJ/T
//!   212-2005 air-station digits for a 2005 device: 3 normal, 0 calibration, 2 abnormal,
//!   1 meteorological — which the service reads back as maintenance), `PW=123456`, Flag
//!   with the reply bit set, `QN` the reading's local time with milliseconds (unique per
//!   device, and the same when a frame is re-sent). The values are
//!   [`Simulator::site_day`]'s, so a JSON run and an HJ 212 run of one seed describe the
//!   same readings.
//! - **TCP.** [`Device`]: one connection per device; a frame counts as delivered only
//!   when its CN=9014 answer with the same `QN` has arrived. Up to `window` frames are
//!   outstanding; a lost connection is reopened at once (then with a short backoff while
//!   the server is away) and every unanswered frame is sent again, in order. A frame
//!   unanswered for `reply_timeout` on a live connection is sent again, up to `retries`
//!   times (the standard's "overtime" and "recount"), then given up and counted.
//! - **MQTT.** [`Simulator::hj212_payload`]: one or more frames per message, published
//!   by the MQTT publisher of the parent module to `hj212/<site>/frames`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{SimReading, Simulator};
use crate::backoff::Backoff;
use crate::decode::hj212::{
    decode, encode, flag_value, CrcVariant, DataFlag, DataTime, Factor, FactorValues, Frame,
    Framer, StationFlag, Version,
};
use crate::model::{Flag, UnixMillis};

/// The password every simulated device sends.
pub const SIM_PASSWORD: &str = "123456";

/// The MQTT topic filter HJ 212 frames are published under; `+` is the site id.
pub const MQTT_TOPIC_FILTER: &str = "hj212/+/frames";

/// The MN (device id) of simulated site `site` (0-based, like [`Simulator::site_id`]):
/// 24 characters, `410103` (the district's administrative code), `AQ`, and the site
/// number (1-based) in 16 digits: site 0 is `410103AQ0000000000000001`.
pub fn mn_of(site: usize) -> String {
    format!("410103AQ{:016}", site + 1)
}

/// How a simulated device writes its frames.
#[derive(Debug, Clone)]
pub struct FrameOptions {
    pub crc: CrcVariant,
    pub version: Version,
    pub password: String,
}

impl Default for FrameOptions {
    fn default() -> Self {
        FrameOptions {
            crc: CrcVariant::Hj212,
            version: Version::Hj2017,
            password: SIM_PASSWORD.to_owned(),
        }
    }
}

/// The `-Flag` a device of `version` sends for the simulator's flag.
pub fn data_flag(flag: Flag, version: Version) -> DataFlag {
    match version {
        Version::Hjt2005 => DataFlag::Station(match flag {
            Flag::Normal => StationFlag::Normal,
            Flag::Calibration => StationFlag::Calibration,
            Flag::Maintenance => StationFlag::Meteorological,
            _ => StationFlag::Abnormal,
        }),
        Version::Hj2017 | Version::Hj2025 => DataFlag::Letter(flag),
    }
}

/// One encoded frame of one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The frame's `QN`, echoed by its CN=9014 answer.
    pub qn: String,
    /// The whole frame, `##` to `\r\n`.
    pub bytes: Vec<u8>,
}

impl Simulator {
    /// The local wall-clock time of `ts` in the simulator's zone.
    pub fn local_time(&self, ts: UnixMillis) -> NaiveDateTime {
        let date = self.zone.date_of(ts);
        let ms = ts.0 - self.zone.start_of(date).0;
        date.and_hms_opt(0, 0, 0).expect("midnight") + chrono::Duration::milliseconds(ms)
    }

    /// The `QN` of reading `ts`: its local time with milliseconds, 17 digits.
    pub fn qn_of(&self, ts: UnixMillis) -> String {
        self.local_time(ts).format("%Y%m%d%H%M%S%3f").to_string()
    }

    /// The CN=2011 frame of a reading (reply bit set).
    pub fn hj212_frame(&self, r: &SimReading, o: &FrameOptions) -> Frame {
        let item = |factor: Factor, v: f64| FactorValues {
            rtd: Some(v),
            flag: Some(data_flag(r.flag, o.version)),
            ..FactorValues::new(factor.code())
        };
        Frame {
            qn: Some(self.qn_of(r.ts)),
            // 39 construction dust exists from HJ 212-2017 on; 22 air quality before.
            st: if o.version == Version::Hjt2005 {
                "22"
            } else {
                "39"
            }
            .to_owned(),
            cn: 2011,
            pw: o.password.clone(),
            mn: mn_of(r.site),
            flag: Some(flag_value(o.version, true, false)),
            split: None,
            data_time: Some(DataTime {
                local: self.local_time(r.ts),
                with_millis: false,
            }),
            factors: vec![item(Factor::Pm10, r.pm10), item(Factor::Pm25, r.pm25)],
            params: Vec::new(),
        }
    }

    /// The encoded CN=2011 frame of a reading.
    pub fn hj212_encoded(&self, r: &SimReading, o: &FrameOptions) -> Encoded {
        let f = self.hj212_frame(r, o);
        Encoded {
            qn: f.qn.clone().unwrap_or_default(),
            // Finite values, short fields: the encoder cannot refuse this frame.
            bytes: encode(&f, o.crc).expect("a simulated frame encodes"),
        }
    }

    /// An MQTT payload: the readings' frames, one after the other.
    pub fn hj212_payload(&self, readings: &[SimReading], o: &FrameOptions) -> Vec<u8> {
        readings
            .iter()
            .flat_map(|r| self.hj212_encoded(r, o).bytes)
            .collect()
    }
}

/// A frame a device got its answer for.
#[derive(Debug, Clone)]
pub struct Answered {
    pub site: usize,
    pub ts: UnixMillis,
    pub qn: String,
    /// From the frame's last sending to its answer.
    pub latency: Duration,
}

/// Called for every answered frame (benchmarks, tests).
pub type OnReply = Arc<dyn Fn(&Answered) + Send + Sync>;

/// How a TCP device behaves.
#[derive(Clone)]
pub struct DeviceConfig {
    pub frames: FrameOptions,
    /// Frames sent and not yet answered, at most.
    pub window: usize,
    /// A frame unanswered this long on a live connection is sent again…
    pub reply_timeout: Duration,
    /// … at most this many times, then given up.
    pub retries: u32,
    /// At most this many frames per second on the connection (re-sends included); the
    /// service closes connections above its `max_frames_per_sec`.
    pub max_frames_per_sec: f64,
    /// A device that cannot connect for this long gives up: what it holds and what it
    /// is given later count as unanswered (a command must end; a field device would
    /// retry forever).
    pub give_up_after: Duration,
    pub on_reply: Option<OnReply>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            frames: FrameOptions::default(),
            window: 8,
            reply_timeout: Duration::from_secs(10),
            retries: 3,
            max_frames_per_sec: 50.0,
            give_up_after: Duration::from_secs(120),
            on_reply: None,
        }
    }
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("frames", &self.frames)
            .field("window", &self.window)
            .field("reply_timeout", &self.reply_timeout)
            .field("retries", &self.retries)
            .field("max_frames_per_sec", &self.max_frames_per_sec)
            .field("give_up_after", &self.give_up_after)
            .field("on_reply", &self.on_reply.is_some())
            .finish()
    }
}

/// What one device did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    pub site: usize,
    /// Frames answered (each counted once).
    pub delivered: u64,
    /// Frames given up after `retries` re-sends without an answer.
    pub unanswered: u64,
    /// Frame writes beyond the first of each frame (after a reconnect or a timeout).
    pub resent: u64,
    /// Connections opened.
    pub connections: u64,
    /// Answers whose CRC did not check under the device's variant (accepted anyway,
    /// when they check as four hex digits).
    pub reply_crc_mismatch: u64,
}

impl DeviceReport {
    /// Adds another device's figures.
    pub fn add(&mut self, o: &DeviceReport) {
        self.delivered += o.delivered;
        self.unanswered += o.unanswered;
        self.resent += o.resent;
        self.connections += o.connections;
        self.reply_crc_mismatch += o.reply_crc_mismatch;
    }
}

/// One simulated HJ 212 device on TCP: feed it readings with [`Device::send`], then
/// [`Device::finish`] waits until every frame is answered (or given up).
#[derive(Debug)]
pub struct Device {
    tx: mpsc::Sender<SimReading>,
    task: tokio::task::JoinHandle<DeviceReport>,
}

impl Device {
    /// Starts site `site`'s device, connecting to `addr` (`host:port`).
    pub fn spawn(
        sim: &Simulator,
        addr: impl Into<String>,
        site: usize,
        cfg: DeviceConfig,
    ) -> Device {
        let (tx, rx) = mpsc::channel(cfg.window.max(1) * 2);
        let task = tokio::spawn(run(sim.clone(), addr.into(), site, cfg, rx));
        Device { tx, task }
    }

    /// Queues a reading; waits while the device's queue is full. False when the device
    /// has stopped.
    pub async fn send(&self, r: SimReading) -> bool {
        self.tx.send(r).await.is_ok()
    }

    /// Ends the input and waits until every frame is answered or given up.
    pub async fn finish(self) -> DeviceReport {
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

/// A frame sent and not answered yet.
struct InFlight {
    ts: UnixMillis,
    enc: Encoded,
    sent_at: Instant,
    sends: u32,
}

/// Spaces writes to at most `rate` per second.
struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        Pace {
            interval: (rate.is_finite() && rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            next: Instant::now(),
        }
    }
    async fn wait(&mut self) {
        if let Some(i) = self.interval {
            let now = Instant::now();
            if self.next > now {
                tokio::time::sleep_until(self.next).await;
            }
            // No bursts after an idle spell.
            self.next = self.next.max(now) + i;
        }
    }
}

// Long because a field device's loop — connect, send within the window, read the
// answers, time out and re-send, reconnect and re-send what was not answered — reads
// best as one state machine over its pending frames.
async fn run(
    sim: Simulator,
    addr: String,
    site: usize,
    cfg: DeviceConfig,
    mut rx: mpsc::Receiver<SimReading>,
) -> DeviceReport {
    let mut report = DeviceReport {
        site,
        ..DeviceReport::default()
    };
    let window = cfg.window.max(1);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut input_open = true;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut pace = Pace::new(cfg.max_frames_per_sec);
    let mut first_attempt = true;
    let mut down_since: Option<Instant> = None;
    while input_open || !in_flight.is_empty() {
        if !first_attempt {
            tokio::time::sleep(backoff.next_delay()).await;
        }
        first_attempt = false;
        let since = *down_since.get_or_insert_with(Instant::now);
        let Ok(stream) = TcpStream::connect(&addr).await else {
            if since.elapsed() >= cfg.give_up_after {
                rx.close();
                let mut lost = in_flight.len() as u64;
                while rx.recv().await.is_some() {
                    lost += 1;
                }
                report.unanswered += lost;
                return report;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        report.connections += 1;
        let (mut rd, mut wr) = stream.into_split();
        // Every frame not answered yet goes again, in order.
        let mut lost = false;
        for f in in_flight.iter_mut() {
            pace.wait().await;
            if wr.write_all(&f.enc.bytes).await.is_err() {
                lost = true;
                break;
            }
            f.sent_at = Instant::now();
            f.sends += 1;
            report.resent += 1;
        }
        if lost {
            continue;
        }
        // Connected: a lost connection from here on is retried at once.
        backoff.reset();
        down_since = None;
        first_attempt = true;
        let mut framer = Framer::new();
        let mut buf = vec![0u8; 4096];
        loop {
            if !input_open && in_flight.is_empty() {
                let _ = wr.shutdown().await;
                return report;
            }
            let timeout_at = in_flight
                .iter()
                .map(|f| f.sent_at + cfg.reply_timeout)
                .min();
            tokio::select! {
                n = rd.read(&mut buf) => {
                    let n = match n {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    for bytes in framer.feed(&buf[..n]) {
                        let Ok(bytes) = bytes else { continue };
                        let frame = match decode(&bytes, cfg.frames.crc) {
                            Ok(f) => f,
                            Err(_) => match decode(&bytes, CrcVariant::None) {
                                Ok(f) => {
                                    report.reply_crc_mismatch += 1;
                                    f
                                }
                                Err(_) => continue,
                            },
                        };
                        if frame.cn != 9014 {
                            continue;
                        }
                        let Some(qn) = frame.qn.as_deref() else { continue };
                        if let Some(i) = in_flight.iter().position(|f| f.enc.qn == qn) {
                            let f = in_flight.remove(i).expect("present");
                            report.delivered += 1;
                            if let Some(cb) = &cfg.on_reply {
                                cb(&Answered {
                                    site,
                                    ts: f.ts,
                                    qn: f.enc.qn,
                                    latency: f.sent_at.elapsed(),
                                });
                            }
                        }
                    }
                }
                r = rx.recv(), if input_open && in_flight.len() < window => {
                    let Some(r) = r else {
                        input_open = false;
                        continue;
                    };
                    let enc = sim.hj212_encoded(&r, &cfg.frames);
                    pace.wait().await;
                    let ok = wr.write_all(&enc.bytes).await.is_ok();
                    in_flight.push_back(InFlight { ts: r.ts, enc, sent_at: Instant::now(), sends: 1 });
                    if !ok {
                        break;
                    }
                }
                () = sleep_until_opt(timeout_at) => {
                    let now = Instant::now();
                    let mut lost = false;
                    let mut i = 0;
                    while i < in_flight.len() {
                        if in_flight[i].sent_at + cfg.reply_timeout > now {
                            i += 1;
                            continue;
                        }
                        if in_flight[i].sends > cfg.retries {
                            in_flight.remove(i);
                            report.unanswered += 1;
                            continue;
                        }
                        pace.wait().await;
                        let f = &mut in_flight[i];
                        f.sent_at = Instant::now();
                        f.sends += 1;
                        report.resent += 1;
                        if wr.write_all(&f.enc.bytes).await.is_err() {
                            lost = true;
                            break;
                        }
                        i += 1;
                    }
                    if lost {
                        break;
                    }
                }
            }
        }
    }
    report
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Where TCP devices connect: `tcp://host:port` or `host:port`.
pub fn tcp_addr(target: &str) -> Result<String, String> {
    let rest = target.strip_prefix("tcp://").unwrap_or(target);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(rest.to_owned())
        }
        _ => Err(format!("--target {target:?}: expected tcp://host:port")),
    }
}

/// Replays a historical period over TCP, one [`Device`] per site (late site-days at the
/// end of their device's stream, as a backlog upload). `replay.rate` is the fleet's
/// frames per second (split evenly over the devices), `replay.speed` simulated seconds
/// per real second; `replay.batch` does not apply (one reading per CN=2011 frame).
/// Returns the devices' reports, summed.
pub async fn publish_history_tcp(
    sim: &Simulator,
    addr: &str,
    replay: &super::Replay,
    cfg: &DeviceConfig,
) -> DeviceReport {
    let mut tasks = Vec::with_capacity(sim.sites);
    for s in 0..sim.sites {
        let mut cfg = cfg.clone();
        if let Some(rate) = replay.rate {
            cfg.max_frames_per_sec = cfg.max_frames_per_sec.min(rate / sim.sites.max(1) as f64);
        }
        let device = Device::spawn(sim, addr, s, cfg);
        let sim = sim.clone();
        let replay = replay.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let sim_start = sim.zone.start_of(replay.from).0;
            let mut late = Vec::new();
            for day in 0..replay.days {
                let date = replay.from + chrono::Duration::days(i64::from(day));
                let d = sim
                    .zone
                    .start_of(date)
                    .0
                    .div_euclid(crate::model::MS_PER_DAY);
                let readings = sim.site_day(s, date);
                if sim.late(s, d) {
                    late.extend(readings);
                    continue;
                }
                for r in readings {
                    if let Some(speed) = replay.speed {
                        let el = (r.ts.0 - sim_start) as f64 / 1000.0;
                        tokio::time::sleep_until(t0 + Duration::from_secs_f64(el / speed)).await;
                    }
                    if !device.send(r).await {
                        return device.finish().await;
                    }
                }
            }
            for r in late {
                if !device.send(r).await {
                    break;
                }
            }
            device.finish().await
        }));
    }
    let mut total = DeviceReport::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.add(&r);
        }
    }
    total
}

/// Live mode over TCP: every interval, one reading per site stamped with the current
/// slot of `clock`, for `days` days, each site on its own connection.
pub async fn publish_live_tcp(
    sim: &Simulator,
    addr: &str,
    days: u32,
    clock: &dyn crate::clock::Clock,
    cfg: &DeviceConfig,
) -> DeviceReport {
    let devices: Vec<Device> = (0..sim.sites)
        .map(|s| Device::spawn(sim, addr, s, cfg.clone()))
        .collect();
    let step = i64::from(sim.interval_secs) * 1000;
    let end = clock.now().0 + i64::from(days) * crate::model::MS_PER_DAY;
    loop {
        let now = clock.now().0;
        let slot = (now / step + 1) * step;
        if slot > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis((slot - now) as u64)).await;
        let date = sim.zone.date_of(UnixMillis(slot));
        for (s, device) in devices.iter().enumerate() {
            if let Some(r) = sim.site_day(s, date).into_iter().find(|r| r.ts.0 == slot) {
                device.send(r).await;
            }
        }
    }
    let mut total = DeviceReport::default();
    for d in devices {
        total.add(&d.finish().await);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aqi::zone::Zone;
    use crate::decode::hj212::to_observations;
    use crate::model::ConcentrationUnit;
    use chrono::NaiveDate;
    use tokio::net::TcpListener;

    fn sim() -> Simulator {
        Simulator {
            sites: 3,
            interval_secs: 300,
            seed: 5,
            zone: Zone::BEIJING,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2016, 11, 3).unwrap()
    }

    #[test]
    fn mns_are_24_characters_distinct_and_stable() {
        assert_eq!(mn_of(0), "410103AQ0000000000000001");
        let all: std::collections::HashSet<String> = (0..5000).map(mn_of).collect();
        assert_eq!(all.len(), 5000);
        assert!(all.iter().all(|m| m.len() == 24));
    }

    /// Every version and CRC: the frame decodes under the device's CRC (and not under
    /// the other one), and gives back the reading the JSON payload carries.
    #[test]
    fn frames_decode_to_the_simulated_readings() {
        let s = sim();
        let readings = s.site_day(1, day());
        assert!(readings.len() > 200);
        let flagged = readings
            .iter()
            .find(|r| r.flag != Flag::Normal)
            .cloned()
            .unwrap_or_else(|| SimReading {
                flag: Flag::Calibration,
                ..readings[0].clone()
            });
        for version in [Version::Hjt2005, Version::Hj2017, Version::Hj2025] {
            for (crc, other) in [
                (CrcVariant::Hj212, CrcVariant::Modbus),
                (CrcVariant::Modbus, CrcVariant::Hj212),
            ] {
                let o = FrameOptions {
                    crc,
                    version,
                    ..FrameOptions::default()
                };
                for r in [&readings[0], &readings[100], &flagged] {
                    let enc = s.hj212_encoded(r, &o);
                    let f = decode(&enc.bytes, crc).unwrap();
                    assert!(decode(&enc.bytes, other).is_err(), "{version:?} {crc:?}");
                    assert_eq!(f.qn.as_deref(), Some(enc.qn.as_str()));
                    assert_eq!(f.mn, mn_of(1));
                    assert_eq!(f.pw, SIM_PASSWORD);
                    assert_eq!(f.cn, 2011);
                    assert_eq!(f.version(), Some(version));
                    assert!(f.wants_reply());
                    let obs = to_observations(
                        &f,
                        Zone::BEIJING,
                        ConcentrationUnit::MicrogramsPerCubicMetre,
                    )
                    .unwrap();
                    assert_eq!(obs.len(), 1);
                    let o = &obs[0];
                    assert_eq!(o.ts, r.ts);
                    assert_eq!((o.pm25, o.pm10), (Some(r.pm25), Some(r.pm10)));
                    let want = match (version, r.flag) {
                        // The 2005 air-station flags have no "maintenance": 1
                        // (meteorological) is read as maintenance, the rest as fault.
                        (
                            Version::Hjt2005,
                            Flag::Normal | Flag::Calibration | Flag::Maintenance,
                        ) => r.flag,
                        (Version::Hjt2005, _) => Flag::Fault,
                        _ => r.flag,
                    };
                    assert_eq!(o.flag, want);
                }
            }
        }
        // QN: the reading's local time with milliseconds; DataTime local (UTC+8).
        let enc = s.hj212_encoded(&readings[0], &FrameOptions::default());
        assert_eq!(enc.qn, "20161103000000000");
        let text = String::from_utf8(enc.bytes).unwrap();
        assert!(text.contains("DataTime=20161103000000;"), "{text}");
        assert!(text.contains(";Flag=5;"), "{text}");
    }

    #[test]
    fn mqtt_payloads_are_concatenated_frames() {
        let s = sim();
        let r = s.site_day(0, day());
        let p = s.hj212_payload(&r[..5], &FrameOptions::default());
        let mut framer = Framer::new();
        let frames: Vec<_> = framer.feed(&p).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(framer.pending_bytes(), 0);
    }

    /// A toy server: answers each frame after its QN is in `answer`, dropping the
    /// connection after the first `drop_after` frames of the first connection; the
    /// device resends what was not answered and ends with everything delivered.
    #[tokio::test]
    async fn a_device_resends_unanswered_frames_after_a_lost_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let s = sim();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen2 = Arc::clone(&seen);
        let server = tokio::spawn(async move {
            for conn in 0.. {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut framer = Framer::new();
                let mut buf = vec![0u8; 2048];
                let mut n_frames = 0;
                let mut cut = false;
                while !cut {
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let frames: Vec<_> = framer.feed(&buf[..n]).collect();
                    for bytes in frames {
                        let f = decode(&bytes.unwrap(), CrcVariant::Hj212).unwrap();
                        n_frames += 1;
                        seen2.lock().unwrap().push(f.qn.clone().unwrap());
                        if conn == 0 && n_frames == 3 {
                            // Cut off before answering the third frame.
                            cut = true;
                            break;
                        }
                        let reply = f.reply(CrcVariant::Hj212).unwrap().unwrap();
                        sock.write_all(&reply).await.unwrap();
                    }
                }
                drop(sock);
                if conn == 1 {
                    break;
                }
            }
        });
        let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let a2 = Arc::clone(&answered);
        let cfg = DeviceConfig {
            window: 1,
            on_reply: Some(Arc::new(move |a: &Answered| {
                a2.lock().unwrap().push(a.qn.clone())
            })),
            ..DeviceConfig::default()
        };
        let device = Device::spawn(&s, addr, 2, cfg);
        let readings: Vec<_> = s.site_day(2, day()).into_iter().take(6).collect();
        for r in &readings {
            assert!(device.send(r.clone()).await);
        }
        let report = device.finish().await;
        server.abort();
        let want: Vec<String> = readings.iter().map(|r| s.qn_of(r.ts)).collect();
        assert_eq!(*answered.lock().unwrap(), want);
        assert_eq!(report.delivered, 6);
        assert_eq!(report.connections, 2);
        assert_eq!(report.resent, 1);
        assert_eq!(report.unanswered, 0);
        // The third frame was sent twice: once unanswered, once after the reconnect.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().filter(|q| **q == want[2]).count(), 2);
    }

    /// Nobody listening: the device gives up after `give_up_after` and counts every
    /// reading it was given as unanswered, so a command ends.
    #[tokio::test]
    async fn a_device_with_no_server_gives_up_and_counts() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s = sim();
        let cfg = DeviceConfig {
            give_up_after: Duration::from_millis(300),
            ..DeviceConfig::default()
        };
        let device = Device::spawn(&s, format!("127.0.0.1:{port}"), 0, cfg);
        let mut given = 0;
        for r in s.site_day(0, day()).into_iter().take(3) {
            if device.send(r).await {
                given += 1;
            }
        }
        let report = device.finish().await;
        assert_eq!(report.unanswered, given);
        assert_eq!((report.delivered, report.connections), (0, 0));
    }
}
