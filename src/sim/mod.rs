//! The device simulator: realistic PM readings for a district of construction sites,
//! deterministic for a seed. Diurnal cycles, multi-day pollution episodes shared by all
//! sites, construction-dust spikes at single sites (PM10 only, so PM2.5 ≤ PM10 always
//! holds), sites that go silent for hours or a day, readings flagged for maintenance,
//! fault or calibration, and site-days whose upload comes late (a backlog).
//!
//! Every random draw is seeded by (seed, what, site, day, …), so a site-day is the same
//! whatever order it is generated in. Used by `aq-ingest simulate` (any broker, or HJ 212
//! devices on TCP: [`hj212`]), `aq-ingest demo`, and as the load generator for
//! benchmarks.

pub mod hj212;

use std::time::Duration;

use chrono::NaiveDate;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::aqi::zone::Zone;
use crate::clock::Clock;
use crate::model::{Flag, UnixMillis, MS_PER_DAY};

/// One simulated reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReading {
    pub site: usize,
    pub ts: UnixMillis,
    pub pm25: f64,
    pub pm10: f64,
    pub flag: Flag,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulator {
    pub sites: usize,
    pub interval_secs: u32,
    pub seed: u64,
    pub zone: Zone,
}

/// Probability that a site-day has a silent stretch of 3–10 hours.
pub const P_SILENT_STRETCH: f64 = 0.03;
/// Probability that a site sends nothing all day.
pub const P_SILENT_DAY: f64 = 0.01;
/// Probability that a reading is flagged maintenance or fault.
pub const P_FLAGGED: f64 = 0.01;
/// Probability that a site-hour has a construction-dust spike (PM10 × 2–4).
pub const P_DUST_SPIKE: f64 = 0.02;
/// Probability that a district-wide pollution episode starts on a day.
pub const P_EPISODE: f64 = 0.08;
/// Probability that a site-day is uploaded late, as a backlog.
pub const P_LATE: f64 = 0.02;

/// splitmix64: a tiny, well-mixed hash to derive independent seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Simulator {
    fn rng(&self, what: u64, a: u64, b: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(mix(mix(mix(self.seed ^ what) ^ a) ^ b))
    }

    /// The site id of site `i`: `erqi-001`, …
    pub fn site_id(i: usize) -> String {
        format!("erqi-{:03}", i + 1)
    }

    /// The district-wide level on day `d` (days since 1970), µg/m³ of PM2.5: a season
    /// that worsens toward winter, times any pollution episode, times daily weather.
    fn district_level(&self, d: i64) -> f64 {
        // Day of year, 0 = 1 January.
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(d);
        let doy = f64::from(chrono::Datelike::ordinal0(&date));
        // Cleanest in August, worst in January (Zhengzhou's pattern).
        let season = 55.0 + 40.0 * (2.0 * std::f64::consts::PI * (doy - 15.0) / 365.0).cos();
        let mut episode = 1.0;
        for back in 0..5 {
            let mut r = self.rng(1, (d - back) as u64, 0);
            if r.f64() < P_EPISODE {
                let len = 2 + r.u64(0..4) as i64;
                if back < len {
                    episode = f64::max(episode, 1.8 + 1.2 * r.f64());
                }
            }
        }
        let weather = 0.75 + 0.5 * self.rng(2, d as u64, 0).f64();
        season * episode * weather
    }

    /// Whether site `s`'s day `d` (days since 1970) is uploaded late.
    pub fn late(&self, s: usize, d: i64) -> bool {
        self.rng(3, s as u64, d as u64).f64() < P_LATE
    }

    /// All readings of site `s` on local day `date`, in time order.
    pub fn site_day(&self, s: usize, date: NaiveDate) -> Vec<SimReading> {
        let start = self.zone.start_of(date);
        let d = start.0.div_euclid(MS_PER_DAY);
        let mut r = self.rng(4, s as u64, d as u64);
        if r.f64() < P_SILENT_DAY {
            return Vec::new();
        }
        let silent = (r.f64() < P_SILENT_STRETCH).then(|| {
            let from = r.u32(0..20);
            from..from + 3 + r.u32(0..8)
        });
        let site_factor = 0.8 + 0.5 * self.rng(5, s as u64, 0).f64();
        let ratio = 0.45 + 0.25 * r.f64();
        let level = self.district_level(d);
        let per_day = 86_400 / self.interval_secs.max(1);
        let mut out = Vec::with_capacity(per_day as usize);
        let mut hour_spike = [1.0f64; 24];
        for (h, spike) in hour_spike.iter_mut().enumerate() {
            let mut hr = self.rng(6, s as u64, (d as u64) << 8 | h as u64);
            if hr.f64() < P_DUST_SPIKE {
                *spike = 2.0 + 2.0 * hr.f64();
            }
        }
        for i in 0..per_day {
            let secs = i * self.interval_secs;
            let hour = secs / 3600;
            if silent.as_ref().is_some_and(|w| w.contains(&hour)) {
                continue;
            }
            let diurnal = 1.0
                + 0.25
                    * (2.0 * std::f64::consts::PI * (f64::from(secs) / 3600.0 - 21.0) / 24.0).cos();
            let noise = 0.9 + 0.2 * r.f64();
            let pm25 = (level * diurnal * site_factor * noise * 10.0).round() / 10.0;
            let pm10 = ((pm25 / ratio) * hour_spike[hour as usize] * 10.0).round() / 10.0;
            let flag = if hour == 10 && (d + s as i64) % 7 == 0 {
                Flag::Calibration
            } else if r.f64() < P_FLAGGED {
                if r.bool() {
                    Flag::Maintenance
                } else {
                    Flag::Fault
                }
            } else {
                Flag::Normal
            };
            out.push(SimReading {
                site: s,
                ts: UnixMillis(start.0 + i64::from(secs) * 1000),
                pm25,
                pm10: pm10.max(pm25),
                flag,
            });
        }
        out
    }

    /// The payload for readings of one site in `format`.
    pub fn payload_in(&self, format: &Format, readings: &[SimReading]) -> Vec<u8> {
        match format {
            Format::Json => self.payload(readings),
            Format::Hj212(o) => self.hj212_payload(readings, o),
        }
    }

    /// The JSON payload for readings of one site.
    pub fn payload(&self, readings: &[SimReading]) -> Vec<u8> {
        let one = |r: &SimReading| {
            format!(
                r#"{{"ts":{},"pm25":{},"pm10":{},"flag":"{}","interval_secs":{}}}"#,
                r.ts.0,
                r.pm25,
                r.pm10,
                r.flag.code(),
                self.interval_secs
            )
        };
        match readings {
            [r] => one(r).into_bytes(),
            many => {
                format!("[{}]", many.iter().map(one).collect::<Vec<_>>().join(",")).into_bytes()
            }
        }
    }
}

/// Where the simulator publishes: a plain-MQTT broker and the reading topic filter
/// whose first `+` level is replaced by the site id (the service's configured filter).
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub topic_filter: String,
}

impl Target {
    /// The topic site `s` publishes to.
    pub fn topic(&self, s: usize) -> String {
        crate::plan::reading_topic(
            std::slice::from_ref(&self.topic_filter),
            &Simulator::site_id(s),
        )
    }

    /// A QoS 1 client and its event loop; the loop must be polled by the caller.
    fn connect(&self, client_id: String) -> (AsyncClient, EventLoop) {
        let mut o = MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_inflight(500);
        AsyncClient::new(o, 1000)
    }
}

/// What an MQTT message carries.
#[derive(Debug, Clone, Default)]
pub enum Format {
    /// The service's JSON payload (a reading or an array of them).
    #[default]
    Json,
    /// HJ 212 CN=2011 frames, one per reading, one after the other (publish them to
    /// [`hj212::MQTT_TOPIC_FILTER`]).
    Hj212(hj212::FrameOptions),
}

/// How `publish_history` sends.
#[derive(Debug, Clone)]
pub struct Replay {
    pub from: NaiveDate,
    pub days: u32,
    /// Readings per message (a device's batch upload); 1 = one message per reading.
    pub batch: usize,
    /// At most this many messages per second (None: as fast as the broker takes them).
    pub rate: Option<f64>,
    /// Simulated seconds per real second (None: as fast as possible).
    pub speed: Option<f64>,
}

/// Publishes a historical period to `broker` (host, port) at QoS 1, late site-days at
/// the end as backlog uploads. Returns the number of messages, all acknowledged by the
/// broker when it returns.
pub async fn publish_history(
    sim: &Simulator,
    target: &Target,
    replay: &Replay,
) -> Result<u64, rumqttc::ConnectionError> {
    publish_history_as(sim, target, replay, &Format::Json).await
}

/// [`publish_history`] with the payload in `format`.
pub async fn publish_history_as(
    sim: &Simulator,
    target: &Target,
    replay: &Replay,
    format: &Format,
) -> Result<u64, rumqttc::ConnectionError> {
    let (client, mut el) = target.connect(format!("aq-sim-{}", sim.seed));
    let closer = client.clone();
    let target = target.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let sim2 = sim.clone();
    let replay = replay.clone();
    let format = format.clone();
    let feeder = tokio::spawn(async move {
        let sent = feed(&client, &sim2, &target, &replay, &format).await;
        let _ = done_tx.send(sent);
        sent
    });
    let mut acked = 0u64;
    let mut total: Option<u64> = None;
    loop {
        if total.is_some_and(|t| acked >= t) {
            break;
        }
        tokio::select! {
            ev = el.poll() => {
                if let Event::Incoming(Packet::PubAck(_)) = ev? {
                    acked += 1;
                }
            }
            t = &mut done_rx, if total.is_none() => {
                total = Some(t.unwrap_or(0));
            }
        }
    }
    let sent = feeder.await.unwrap_or(acked);
    let _ = closer.try_disconnect();
    Ok(sent)
}

/// Publishes the replay's messages (late site-days last, as backlog uploads); returns
/// how many were queued before the first failure, if any.
async fn feed(
    client: &AsyncClient,
    sim: &Simulator,
    target: &Target,
    replay: &Replay,
    format: &Format,
) -> u64 {
    let mut sent: u64 = 0;
    let mut late = Vec::new();
    let t0 = tokio::time::Instant::now();
    let sim_start = sim.zone.start_of(replay.from).0;
    for day in 0..replay.days {
        let date = replay.from + chrono::Duration::days(i64::from(day));
        let d = sim.zone.start_of(date).0.div_euclid(MS_PER_DAY);
        let per_site: Vec<Vec<SimReading>> =
            (0..sim.sites).map(|s| sim.site_day(s, date)).collect();
        for (s, readings) in per_site.into_iter().enumerate() {
            if sim.late(s, d) {
                late.push(readings);
                continue;
            }
            for chunk in readings.chunks(replay.batch.max(1)) {
                if let Some(speed) = replay.speed {
                    let sim_elapsed = (chunk[0].ts.0 - sim_start) as f64 / 1000.0;
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(sim_elapsed / speed))
                        .await;
                }
                if let Some(rate) = replay.rate {
                    tokio::time::sleep_until(t0 + Duration::from_secs_f64(sent as f64 / rate))
                        .await;
                }
                let topic = target.topic(s);
                if client
                    .publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        sim.payload_in(format, chunk),
                    )
                    .await
                    .is_err()
                {
                    return sent;
                }
                sent += 1;
            }
        }
    }
    // The backlog: each late site-day as one upload.
    for readings in late {
        if let Some(r) = readings.first() {
            let topic = target.topic(r.site);
            for chunk in readings.chunks(5000) {
                if client
                    .publish(
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        sim.payload_in(format, chunk),
                    )
                    .await
                    .is_err()
                {
                    return sent;
                }
                sent += 1;
            }
        }
    }
    sent
}

/// Live mode: every interval, one reading per site stamped with the current slot of
/// `clock`, for `days` days. Returns the number of messages published.
pub async fn publish_live(
    sim: &Simulator,
    target: &Target,
    days: u32,
    clock: &dyn Clock,
) -> Result<u64, rumqttc::ClientError> {
    publish_live_as(sim, target, days, clock, &Format::Json).await
}

/// [`publish_live`] with the payload in `format`.
pub async fn publish_live_as(
    sim: &Simulator,
    target: &Target,
    days: u32,
    clock: &dyn Clock,
    format: &Format,
) -> Result<u64, rumqttc::ClientError> {
    let (client, mut el) = target.connect(format!("aq-sim-live-{}", sim.seed));
    // Drive the connection; rumqttc reconnects on the next poll after an error.
    let driver = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let step = i64::from(sim.interval_secs) * 1000;
    let end = clock.now().0 + i64::from(days) * MS_PER_DAY;
    let mut sent = 0u64;
    let r = loop {
        let now = clock.now().0;
        let slot = (now / step + 1) * step;
        if slot > end {
            break Ok(sent);
        }
        tokio::time::sleep(Duration::from_millis((slot - now) as u64)).await;
        let date = sim.zone.date_of(UnixMillis(slot));
        let mut failed = None;
        for s in 0..sim.sites {
            let day = sim.site_day(s, date);
            if let Some(r) = day.iter().find(|r| r.ts.0 == slot) {
                let payload = sim.payload_in(format, std::slice::from_ref(r));
                match client
                    .publish(target.topic(s), QoS::AtLeastOnce, false, payload)
                    .await
                {
                    Ok(()) => sent += 1,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    driver.abort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(seed: u64) -> Simulator {
        Simulator {
            sites: 20,
            interval_secs: 60,
            seed,
            zone: Zone::BEIJING,
        }
    }

    fn date(d: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2016, 7, 1).unwrap() + chrono::Duration::days(d)
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = sim(7).site_day(3, date(40));
        assert_eq!(a, sim(7).site_day(3, date(40)));
        assert_ne!(a, sim(8).site_day(3, date(40)));
        // Order-free: a site-day does not depend on what was generated before it.
        let s = sim(7);
        let _ = s.site_day(1, date(2));
        assert_eq!(s.site_day(3, date(40)), a);
    }

    #[test]
    fn properties_over_a_half_year() {
        let s = sim(42);
        let (mut total, mut flagged, mut silent_days, mut short_days) = (0usize, 0usize, 0, 0);
        for d in 0..184 {
            for site in 0..s.sites {
                let r = s.site_day(site, date(d));
                if r.is_empty() {
                    silent_days += 1;
                } else if r.len() < 1440 {
                    short_days += 1;
                }
                for w in r.windows(2) {
                    assert_eq!((w[1].ts.0 - w[0].ts.0) % 60_000, 0, "cadence");
                    assert!(w[1].ts > w[0].ts);
                }
                for x in &r {
                    assert!(x.pm25 <= x.pm10, "PM2.5 ≤ PM10: {x:?}");
                    assert!(x.pm25 > 0.0 && x.pm10 < 10_000.0);
                    assert_eq!(x.ts.0 % 60_000, 0);
                    flagged += usize::from(x.flag != Flag::Normal);
                }
                total += r.len();
            }
        }
        let site_days = 184 * s.sites;
        let share = |n: usize, of: usize| n as f64 / of as f64;
        // Flagged: ~1 % random plus the weekly calibration hour (60/1440/7 ≈ 0.6 %).
        assert!(
            (0.008..0.03).contains(&share(flagged, total)),
            "flagged {}",
            share(flagged, total)
        );
        assert!(
            (0.002..0.03).contains(&share(silent_days, site_days)),
            "silent days {silent_days}"
        );
        assert!(
            (0.01..0.06).contains(&share(short_days, site_days)),
            "short days {short_days}"
        );
        let late = (0..184)
            .flat_map(|d| (0..s.sites).map(move |x| (x, d)))
            .filter(|(x, d)| s.late(*x, 17_000 + d))
            .count();
        assert!(
            (0.005..0.05).contains(&share(late, site_days)),
            "late {late}"
        );
    }

    #[test]
    fn payloads_decode_as_readings() {
        let s = sim(1);
        let r = s.site_day(0, date(0));
        let one = crate::decode::json::decode(&s.payload(&r[..1])).unwrap();
        assert_eq!(one.len(), 1);
        let many = crate::decode::json::decode(&s.payload(&r[..12])).unwrap();
        assert_eq!(many.len(), 12);
        assert!(many.iter().all(|o| o.is_ok()));
    }
}
