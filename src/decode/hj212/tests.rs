//! The whole decoder on the standard's example, on frames published by public HJ 212
//! implementations (each test names its source), on known-bad samples and on
//! 2005-style frames; then the round-trip property of the encoder, through the framer.

use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::aqi::zone::Zone;
use crate::model::{ConcentrationUnit, Flag, Period, UnixMillis};

const UG: ConcentrationUnit = ConcentrationUnit::MicrogramsPerCubicMetre;

fn frame_of(segment: &str, crc: &str) -> Vec<u8> {
    format!("##{:04}{segment}{crc}\r\n", segment.len()).into_bytes()
}

fn beijing(s: &str) -> UnixMillis {
    UnixMillis(
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis(),
    )
}

// --- HJ 212-2017 Appendix A ------------------------------------------------------

const APPENDIX_A: &str = "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";

#[test]
fn appendix_a_example_decodes_with_crc_1c80() {
    let f = decode(&frame_of(APPENDIX_A, "1C80"), CrcVariant::Hj212).unwrap();
    assert_eq!(f.qn.as_deref(), Some("20160801085857223"));
    assert_eq!((f.st.as_str(), f.cn), ("32", 1062));
    assert_eq!(
        (f.pw.as_str(), f.mn.as_str()),
        ("100000", "010000A8900016F000169DC0")
    );
    assert_eq!(f.version(), Some(Version::Hj2017));
    assert!(f.wants_reply());
    assert_eq!(f.params, [("RtdInterval".to_owned(), "30".to_owned())]);
    assert_eq!(f.record_kind(), RecordKind::Other);
    assert_eq!(
        to_observations(&f, Zone::BEIJING, UG),
        Err(Hj212Error::UnknownCn { cn: 1062 })
    );
    // The prose's misprint is refused, and so is the value CRC-16/MODBUS gives.
    assert_eq!(
        decode(&frame_of(APPENDIX_A, "1C08"), CrcVariant::Hj212),
        Err(Hj212Error::Crc {
            variant: CrcVariant::Hj212,
            expected: 0x1C80,
            got: 0x1C08
        })
    );
    assert_eq!(crc_modbus(APPENDIX_A.as_bytes()), 0x0759);
    assert!(decode(&frame_of(APPENDIX_A, "0759"), CrcVariant::Hj212).is_err());
    assert!(decode(&frame_of(APPENDIX_A, "0759"), CrcVariant::Modbus).is_ok());
    // The encoder gives back the same bytes.
    assert_eq!(
        encode(&f, CrcVariant::Hj212).unwrap(),
        frame_of(APPENDIX_A, "1C80")
    );
}

// --- Public implementations ----------------------------------------------------

/// xiaoyao9184/hj-t212-parser, `hj-t212-parser/src/test/java/com/xy/format/hbt212/core/T212MapperTest.java`
/// (also `…/core/deser/DataDeserializerTest.java`): a 2005-style frame, no `QN`, no
/// `Flag`, 14-character MN, 17-digit DataTime, old water codes. The source reads ST 32,
/// CN 2011, PW 123456, MN LD130133000015, DataTime 20160824003817000, B01-Rtd 36.91,
/// 011-Rtd 231.0 with flag N, 060-Rtd 1.803 with flag N. Its CRC 4980 matches Appendix A.
#[test]
fn xiaoyao9184_hj_t212_parser_mapper_test_frame() {
    let raw = b"##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;B01-Rtd=36.91;011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980\r\n";
    let f = decode(raw, CrcVariant::Hj212).unwrap();
    assert_eq!(f.qn, None);
    assert_eq!(f.flag, None);
    assert_eq!(f.version(), Some(Version::Hjt2005));
    assert!(!f.wants_reply());
    assert_eq!(
        (f.st.as_str(), f.cn, f.pw.as_str(), f.mn.as_str()),
        ("32", 2011, "123456", "LD130133000015")
    );
    let dt = f.data_time.unwrap();
    assert!(dt.with_millis);
    assert_eq!(dt.format(), "20160824003817000");
    let codes: Vec<_> = f
        .factors
        .iter()
        .map(|v| (v.code.as_str(), v.rtd, v.flag))
        .collect();
    let n = Some(DataFlag::Letter(Flag::Normal));
    assert_eq!(
        codes,
        [
            ("B01", Some(36.91), None),
            ("011", Some(231.0), n),
            ("060", Some(1.803), n)
        ]
    );
    // No code this service reads: decoded, nothing to store, three codes to count.
    assert_eq!(f.ignored_codes().count(), 3);
    assert_eq!(to_observations(&f, Zone::BEIJING, UG), Ok(vec![]));
}

/// xiaoyao9184/hj-t212-parser, `hj-t212-parser/src/test/resources/AllData/2016-08-24 05.h212`:
/// frames recorded from field devices (HJ/T 212-2005: no QN, `Flag=0` or none,
/// 14-character MN, heartbeat CN=8013, minute data CN=2051 with a year-2000 DataTime).
/// Every CRC in these lines matches Appendix A.
#[test]
fn xiaoyao9184_recorded_field_frames() {
    let lines = [
        "##0091ST=91;CN=9015;PW=123456;MN=LD130121000243;Flag=0;CP=&&DataTime=20160824045356000;CON-RT=0&&8801",
        "##0073ST=32;CN=8013;PW=123456;MN=ZG130182201205;Flag=0;CP=&&HeartbeatTime=120&&0500",
        "##0121ST=32;CN=2011;PW=123456;MN=LD130104000268;CP=&&DataTime=20160824045500;B01-Rtd=4.69,B01-Flag=N;011-Rtd=70.00,011-Flag=N&&6E80",
        "##0121ST=32;CN=2011;PW=123456;MN=ZG130102201215;CP=&&DataTime=20160824045130;B01-Rtd=0.00,B01-Flag=D;011-Rtd=32.00,011-Flag=N&&0140",
        "##0595ST=31;CN=2061;PW=123456;MN=LD130131000211;CP=&&DataTime=20000202050000000;B02-Cou=1193282.12,B02-Min=312.69,B02-Avg=331.46,B02-Max=353.84;S01-Min=4.44,S01-Avg=5.12,S01-Max=5.80;S02-Min=7.72,S02-Avg=8.18,S02-Max=8.73;S03-Min=132.72,S03-Avg=135.19,S03-Max=138.15;S05-Min=40.00,S05-Avg=40.00,S05-Max=40.00;S07-Min=40.50,S07-Avg=40.50,S07-Max=40.50;S08-Min=1035.97,S08-Avg=1075.43,S08-Max=1130.58;01-Cou=7.13,01-Min=5.46,01-Avg=5.98,01-Max=6.56;02-Cou=2116.75,02-Min=1692.99,02-Avg=1773.89,02-Max=1894.28;01-ZsMin=5.13,01-ZsAvg=5.65,01-ZsMax=6.32;02-ZsMin=1588.25,02-ZsAvg=1676.07,02-ZsMax=1783.14&&1680",
    ];
    let stream: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    let mut framer = Framer::new();
    let frames: Vec<Frame> = stream
        .chunks(37)
        .flat_map(|c| framer.feed(c).collect::<Vec<_>>())
        .map(|r| decode(&r.unwrap(), CrcVariant::Hj212).unwrap())
        .collect();
    assert_eq!(frames.len(), lines.len());
    assert!(frames
        .iter()
        .all(|f| f.version() == Some(Version::Hjt2005) && f.qn.is_none()));
    assert_eq!(frames[0].params, [("CON-RT".to_owned(), "0".to_owned())]);
    assert_eq!(frames[1].cn, 8013);
    assert_eq!(
        frames[1].params,
        [("HeartbeatTime".to_owned(), "120".to_owned())]
    );
    assert_eq!(
        to_observations(&frames[1], Zone::BEIJING, UG),
        Err(Hj212Error::UnknownCn { cn: 8013 })
    );
    assert_eq!(
        frames[3].factors[0].flag,
        Some(DataFlag::Letter(Flag::Fault))
    );
    let hourly = &frames[4];
    assert_eq!(hourly.record_kind(), RecordKind::Hour);
    assert_eq!(
        hourly.data_time.unwrap().local,
        NaiveDate::from_ymd_opt(2000, 2, 2)
            .unwrap()
            .and_hms_opt(5, 0, 0)
            .unwrap()
    );
    let b02 = &hourly.factors[0];
    assert_eq!(
        (b02.min, b02.avg, b02.max),
        (Some(312.69), Some(331.46), Some(353.84))
    );
    assert!(hourly
        .params
        .iter()
        .any(|(k, v)| k == "B02-Cou" && v == "1193282.12"));
}

/// liruoyu2008/HJ212Interpreter, `README.md`: a CN=2011 upload asking for an answer
/// (`Flag=5`), its CN=9011 answer, a CN=2081 restart notice and a second CN=2011. The
/// README reads `w01008-SampleTime` and `w01008-Rtd=123.456`. All four CRCs match
/// Appendix A.
#[test]
fn liruoyu2008_hj212interpreter_readme_frames() {
    let upload = b"##0162QN=20231008123340461;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008123340;w01008-SampleTime=20231008123340,w01008-Rtd=123.456&&F441\r\n";
    let f = decode(upload, CrcVariant::Hj212).unwrap();
    assert_eq!(f.qn.as_deref(), Some("20231008123340461"));
    assert!(f.wants_reply());
    assert_eq!(f.factors[0].code, "w01008");
    assert_eq!(f.factors[0].rtd, Some(123.456));
    assert_eq!(
        f.params,
        [("w01008-SampleTime".to_owned(), "20231008123340".to_owned())]
    );
    assert_eq!(f.ignored_codes().collect::<Vec<_>>(), ["w01008"]);
    // Flag=5 asks for an answer: CN=9014 echoing the QN.
    let reply = f.reply(CrcVariant::Hj212).unwrap().unwrap();
    let r = decode(&reply, CrcVariant::Hj212).unwrap();
    assert_eq!(
        (r.qn.as_deref(), r.st.as_str(), r.cn, r.flag),
        (Some("20231008123340461"), "91", 9014, Some(4))
    );
    assert!(!r.wants_reply());

    let answer = b"##0094QN=20231008125115215;ST=22;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&CC01\r\n";
    let a = decode(answer, CrcVariant::Hj212).unwrap();
    assert_eq!((a.cn, a.flag, a.wants_reply()), (9011, Some(4), false));
    assert_eq!(a.params, [("QnRtn".to_owned(), "1".to_owned())]);

    let restart = b"##0137QN=20231008130452757;ST=22;CN=2081;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008130452;RestartTime=20231007130452&&3AC0\r\n";
    let r = decode(restart, CrcVariant::Hj212).unwrap();
    assert_eq!(
        r.params,
        [("RestartTime".to_owned(), "20231007130452".to_owned())]
    );
    assert_eq!(
        to_observations(&r, Zone::BEIJING, UG),
        Err(Hj212Error::UnknownCn { cn: 2081 })
    );

    let second = b"##0162QN=20231008132300648;ST=22;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20231008132300;w01008-SampleTime=20231008132300,w01008-Rtd=123.456&&2800\r\n";
    assert!(decode(second, CrcVariant::Hj212).is_ok());
}

/// 1249993110/IceCoffee.HJ212, `README.md` and `Test/Program.cs`: an air-quality hourly
/// frame (ST 22, CN 2061, a 24-character PW, `-Avg` items of a34006, a34007, a34047,
/// a34048, a34049). Its CRC C181 matches Appendix A. None of its codes is PM2.5/PM10, so
/// it gives no observation and five ignored codes.
#[test]
fn icecoffee_hj212_readme_hourly_frame() {
    let raw = b"##0285QN=20190925181031464;ST=22;CN=2061;PW=BF470F88957588DE902D1A52;MN=Z13401000010301;Flag=5;CP=&&DataTime=20190924220000;a34006-Avg=2.69700,a34006-Flag=N;a34007-Avg=7.96600,a34007-Flag=N;a34048-Avg=3.30600,a34048-Flag=N;a34047-Avg=7.35700,a34047-Flag=N;a34049-Avg=10.66300,a34049-Flag=N&&C181\r\n";
    let f = decode(raw, CrcVariant::Hj212).unwrap();
    assert_eq!(f.pw, "BF470F88957588DE902D1A52");
    assert_eq!(f.mn, "Z13401000010301");
    assert_eq!(f.record_kind(), RecordKind::Hour);
    let avgs: Vec<_> = f.factors.iter().map(|v| (v.code.as_str(), v.avg)).collect();
    assert_eq!(
        avgs,
        [
            ("a34006", Some(2.697)),
            ("a34007", Some(7.966)),
            ("a34048", Some(3.306)),
            ("a34047", Some(7.357)),
            ("a34049", Some(10.663))
        ]
    );
    assert_eq!(f.ignored_codes().count(), 5);
    assert_eq!(to_observations(&f, Zone::BEIJING, UG), Ok(vec![]));
    // Under the Modbus variant the same frame is a CRC error naming both values.
    assert!(matches!(
        decode(raw, CrcVariant::Modbus),
        Err(Hj212Error::Crc { got: 0xC181, .. })
    ));
}

/// flash520/hj212, `parse_test.go`: an air-station minute frame (ST 22, CN 2051,
/// `Flag=4`) with PM2.5 14, PM10 31, temperature 17, humidity 85, wind 1 m/s from 11°,
/// plus gases and pressure this service ignores. Its CRC D641 matches Appendix A.
#[test]
fn flash520_hj212_parse_test_minute_frame() {
    let raw = b"##0411QN=20220513162608370;ST=22;CN=2051;PW=123456;MN=JLYP01_AIR01_0001;Flag=4;CP=&&DataTime=20220513162600;a21004-Avg=4,a21004-Flag=N;a05024-Avg=63,a05024-Flag=N;a21026-Avg=6,a21026-Flag=N;a21005-Avg=0.427,a21005-Flag=N;a34004-Avg=14,a34004-Flag=N;a34002-Avg=31,a34002-Flag=N;a01007-Avg=1,a01007-Flag=N;a01008-Avg=11,a01008-Flag=N;a01001-Avg=17,a01001-Flag=N;a01002-Avg=85,a01002-Flag=N;a01006-Avg=95,a01006-Flag=N&&D641\r\n";
    let f = decode(raw, CrcVariant::Hj212).unwrap();
    assert_eq!(f.version(), Some(Version::Hj2017));
    assert!(!f.wants_reply());
    let avg = |x| f.factor(x).and_then(|v| v.avg);
    assert_eq!(avg(Factor::Pm25), Some(14.0));
    assert_eq!(avg(Factor::Pm10), Some(31.0));
    assert_eq!(avg(Factor::Temperature), Some(17.0));
    assert_eq!(avg(Factor::Humidity), Some(85.0));
    assert_eq!(avg(Factor::WindSpeed), Some(1.0));
    assert_eq!(avg(Factor::WindDirection), Some(11.0));
    assert_eq!(
        f.ignored_codes().collect::<Vec<_>>(),
        ["a21004", "a05024", "a21026", "a21005", "a01006"]
    );
    let obs = to_observations(&f, Zone::BEIJING, UG).unwrap();
    assert_eq!(obs.len(), 1);
    let o = &obs[0];
    assert_eq!(o.ts, beijing("2022-05-13T16:26:00+08:00"));
    assert_eq!((o.pm25, o.pm10), (Some(14.0), Some(31.0)));
    assert_eq!(
        (o.period, o.interval_secs, o.flag),
        (Period::Sample, Some(60), Flag::Normal)
    );
    assert_eq!(o.unit, Some(UG));
    assert_eq!(o.device.as_deref(), Some("JLYP01_AIR01_0001"));
}

// --- Known-bad samples ------------------------------------------------------------

#[test]
fn known_bad_samples_are_refused_with_the_right_reason() {
    use Hj212Error::*;
    let good = frame_of(APPENDIX_A, "1C80");
    let d = |f: &[u8]| decode(f, CrcVariant::Hj212).unwrap_err();
    // Bad CRC: one digit changed.
    assert_eq!(
        d(&frame_of(APPENDIX_A, "1C81")),
        Crc {
            variant: CrcVariant::Hj212,
            expected: 0x1C80,
            got: 0x1C81
        }
    );
    // Wrong length.
    let mut wrong = good.clone();
    wrong[2..6].copy_from_slice(b"0099");
    assert_eq!(
        d(&wrong),
        LengthMismatch {
            declared: 99,
            actual: 101
        }
    );
    // Over 1024 bytes, declared and real.
    let long = format!(
        "{}{}&&",
        &APPENDIX_A[..APPENDIX_A.len() - 2],
        ";x=y".repeat(240)
    );
    assert!(long.len() > MAX_SEGMENT_BYTES);
    let crc = format!("{:04X}", crc_hj212(long.as_bytes()));
    assert_eq!(
        d(&frame_of(&long, &crc)),
        TooLong {
            declared: long.len()
        }
    );
    assert_eq!(d(b"##1100QN=1"), TooLong { declared: 1100 });
    // Missing CRLF.
    assert!(matches!(d(&good[..good.len() - 2]), MissingCrlf { .. }));
    // Truncated.
    assert_eq!(
        d(&good[..60]),
        Truncated {
            expected: good.len(),
            got: 60
        }
    );
    // And the error text quotes at most a few bytes of what came in.
    let msg = d(&[b"xx".as_slice(), &[b'y'; 500]].concat()).to_string();
    assert!(msg.len() < 80, "{msg}");
}

// --- 2005-style frames -----------------------------------------------------------

#[test]
fn a_2005_air_station_frame_with_digit_flags() {
    // No QN, Flag=0..3, 14-character MN, air-station digit flags, 17-digit DataTime.
    for (flag, reply) in [("0", false), ("1", true), ("2", false), ("3", true)] {
        let seg = format!("ST=22;CN=2011;PW=123456;MN=41010200000001;Flag={flag};{}CP=&&DataTime=20160801085857000;a34002-Rtd=80.1,a34002-Flag=3;a34004-Rtd=35.2,a34004-Flag=3;a34001-Rtd=120,a34001-Flag=2;a01001-Rtd=28.5,a01001-Flag=1&&",
            if flag == "2" || flag == "3" { "PNUM=1;PNO=1;" } else { "" });
        let raw = encode_segment(&seg, CrcVariant::Modbus).unwrap();
        let f = decode(&raw, CrcVariant::Modbus).unwrap();
        assert_eq!(f.version(), Some(Version::Hjt2005));
        assert_eq!(f.wants_reply(), reply);
        assert_eq!(f.qn, None);
        assert_eq!(f.mn.len(), 14);
        let o = &to_observations(
            &f,
            Zone::BEIJING,
            ConcentrationUnit::MilligramsPerCubicMetre,
        )
        .unwrap()[0];
        assert_eq!(
            (o.pm10, o.pm25, o.flag),
            (Some(80.1), Some(35.2), Flag::Normal)
        );
        assert_eq!(o.ts, beijing("2016-08-01T08:58:57+08:00"));
        assert_eq!(
            f.factor(Factor::Tsp).unwrap().flag.unwrap().to_model(),
            Flag::Fault
        );
        assert_eq!(
            f.factor(Factor::Temperature)
                .unwrap()
                .flag
                .unwrap()
                .to_model(),
            Flag::Maintenance
        );
    }
}

// --- to_observations ----------------------------------------------------------------

fn obs(cp: &str, cn: u16) -> Result<Vec<crate::decode::Observation>, Hj212Error> {
    let seg = format!("QN=20260101000000000;ST=39;CN={cn};PW=1;MN=erqi-01;Flag=9;CP=&&{cp}&&");
    let f = decode(
        &encode_segment(&seg, CrcVariant::Hj212).unwrap(),
        CrcVariant::Hj212,
    )
    .unwrap();
    assert_eq!(f.version(), Some(Version::Hj2025));
    to_observations(&f, Zone::BEIJING, UG)
}

#[test]
fn cn_decides_period_value_and_interval() {
    let cp = "DataTime=20260101080000;a34004-Rtd=1,a34004-Avg=2;a34002-Rtd=3,a34002-Avg=4";
    let o = &obs(cp, 2011).unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.period, o.interval_secs),
        (Some(1.0), Some(3.0), Period::Sample, None)
    );
    let o = &obs(cp, 2051).unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.period, o.interval_secs),
        (Some(2.0), Some(4.0), Period::Sample, Some(60))
    );
    let o = &obs(cp, 2061).unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.period, o.interval_secs),
        (Some(2.0), Some(4.0), Period::Hour, Some(3600))
    );
    // The start of the hour, Beijing time.
    assert_eq!(o.ts, beijing("2026-01-01T08:00:00+08:00"));
    // A daily value: stored as the device's own, never used for validity.
    let o = &obs(cp, 2031).unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.period, o.interval_secs),
        (Some(2.0), Some(4.0), Period::Day, Some(86_400))
    );
    assert_eq!(obs(cp, 9999), Err(Hj212Error::UnknownCn { cn: 9999 }));
    assert_eq!(
        obs("a34004-Rtd=1", 2011),
        Err(Hj212Error::MissingField { field: "DataTime" })
    );
    assert_eq!(
        obs("DataTime=20260101080000;a01001-Rtd=1", 2011),
        Ok(vec![])
    );
}

#[test]
fn mixed_flags_keep_the_normal_pollutant() {
    let o = &obs(
        "DataTime=20260101080000;a34004-Rtd=1,a34004-Flag=N;a34002-Rtd=3,a34002-Flag=D",
        2011,
    )
    .unwrap()[0];
    assert_eq!((o.pm25, o.pm10, o.flag), (Some(1.0), None, Flag::Normal));
    let o = &obs(
        "DataTime=20260101080000;a34004-Rtd=1,a34004-Flag=C;a34002-Rtd=3",
        2011,
    )
    .unwrap()[0];
    assert_eq!((o.pm25, o.pm10, o.flag), (None, Some(3.0), Flag::Normal));
    let o = &obs(
        "DataTime=20260101080000;a34004-Rtd=1,a34004-Flag=M;a34002-Rtd=3,a34002-Flag=D",
        2011,
    )
    .unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.flag),
        (Some(1.0), Some(3.0), Flag::Maintenance)
    );
    let o = &obs(
        "DataTime=20260101080000;a34004-Rtd=1,a34004-Flag=T;a34002-Rtd=3,a34002-Flag=T",
        2011,
    )
    .unwrap()[0];
    assert_eq!(
        (o.pm25, o.pm10, o.flag),
        (Some(1.0), Some(3.0), Flag::OverRange)
    );
}

#[test]
fn replies_carry_the_version_and_no_reply_bit() {
    let r = reply_9014(
        Some("20160801085857223"),
        ST_SYSTEM_INTERACTION,
        "010000A8900016F000169DC0",
        "123456",
        Version::Hj2017,
        CrcVariant::Hj212,
    )
    .unwrap();
    assert_eq!(r, frame_of("QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&", &format!("{:04X}", crc_hj212(b"QN=20160801085857223;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&"))));
    let r = reply_9014(
        None,
        "91",
        "41010200000001",
        "123456",
        Version::Hjt2005,
        CrcVariant::Modbus,
    )
    .unwrap();
    let f = decode(&r, CrcVariant::Modbus).unwrap();
    assert_eq!((f.qn, f.flag, f.cn), (None, Some(0), 9014));
    let r = reply_9014(
        Some("1"),
        "91",
        "m",
        "p",
        Version::Hj2025,
        CrcVariant::Hj212,
    )
    .unwrap();
    assert_eq!(decode(&r, CrcVariant::Hj212).unwrap().flag, Some(8));
}

// --- Round trip ------------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u32..100_000).prop_map(|n| f64::from(n) / 10.0),
        -1.0e6..1.0e6f64,
        Just(0.0),
    ]
}

fn arb_flag() -> impl Strategy<Value = Option<DataFlag>> {
    proptest::option::of(
        prop_oneof!["[NFMSDCTB]", "[0-3]", "[PHZ]"]
            .prop_map(|s: String| DataFlag::parse(&s).unwrap()),
    )
}

fn arb_factor() -> impl Strategy<Value = FactorValues> {
    let code = prop_oneof![
        proptest::sample::select(Factor::ALL.to_vec()).prop_map(|f| f.code().to_owned()),
        "[a-w][0-9]{5}",
        "[A-Z][0-9]{2}",
    ];
    (
        code,
        proptest::option::of(arb_value()),
        proptest::option::of(arb_value()),
        proptest::option::of(arb_value()),
        proptest::option::of(arb_value()),
        arb_flag(),
    )
        .prop_filter("some item", |t| {
            t.1.is_some() || t.2.is_some() || t.3.is_some() || t.4.is_some() || t.5.is_some()
        })
        .prop_map(|(code, rtd, avg, min, max, flag)| FactorValues {
            code,
            rtd,
            avg,
            min,
            max,
            flag,
        })
}

prop_compose! {
    fn arb_frame()(
        qn in proptest::option::of("[0-9]{17}"),
        st in "[0-9]{2}",
        cn in prop_oneof![Just(2011u16), Just(2051), Just(2061), Just(2031), 1000u16..10000],
        pw in "[0-9A-Za-z]{0,12}",
        mn in "[0-9A-Za-z_]{1,24}",
        version in prop_oneof![Just(Version::Hj2017), Just(Version::Hj2025), Just(Version::Hjt2005)],
        reply in any::<bool>(),
        split in proptest::option::of((1u16..50).prop_flat_map(|t| (Just(t), 1..=t))),
        dt in proptest::option::of((2000i32..2100, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, proptest::option::of(0u32..1000))),
        factors in proptest::collection::vec(arb_factor(), 0..8),
        params in proptest::collection::vec(("[A-Z][A-Za-z]{1,11}", "[0-9A-Za-z.]{0,10}"), 0..3),
    ) -> Frame {
        // One set of items per code, as a device sends them.
        let mut seen = std::collections::HashSet::new();
        let factors = factors.into_iter().filter(|f| seen.insert(f.code.clone())).collect();
        let data_time = dt.map(|(y, mo, d, h, mi, s, ms)| DataTime {
            local: NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_milli_opt(h, mi, s, ms.unwrap_or(0)).unwrap(),
            with_millis: ms.is_some(),
        });
        let params = params.into_iter().filter(|(k, _)| k != "DataTime").collect();
        Frame {
            qn,
            st,
            cn,
            pw,
            mn,
            flag: Some(flag_value(version, reply, split.is_some())),
            split: split.map(|(total, number)| Split { total, number }),
            data_time,
            factors,
            params,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoded_frames_round_trip(frame in arb_frame(), modbus in any::<bool>()) {
        let crc = if modbus { CrcVariant::Modbus } else { CrcVariant::Hj212 };
        let bytes = encode(&frame, crc).unwrap();
        prop_assert_eq!(decode(&bytes, crc).unwrap(), frame.clone());
        prop_assert_eq!(decode(&bytes, CrcVariant::None).unwrap(), frame);
    }

    #[test]
    fn encoded_streams_round_trip_through_the_framer(
        frames in proptest::collection::vec(arb_frame(), 1..6),
        modbus in any::<bool>(),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        junk in proptest::collection::vec(proptest::option::of("[a-z \r\n]{1,20}"), 6),
    ) {
        let crc = if modbus { CrcVariant::Modbus } else { CrcVariant::Hj212 };
        let mut stream = Vec::new();
        for (f, j) in frames.iter().zip(&junk) {
            if let Some(j) = j {
                stream.extend_from_slice(j.as_bytes());
            }
            stream.extend(encode(f, crc).unwrap());
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut framer = Framer::new();
        let mut got = Vec::new();
        let mut garbage = 0;
        for w in points.windows(2) {
            let results: Vec<_> = framer.feed(&stream[w[0]..w[1]]).collect();
            prop_assert!(framer.pending_bytes() <= MAX_FRAME_BYTES);
            for r in results {
                match r {
                    Ok(bytes) => got.push(decode(&bytes, crc).unwrap()),
                    Err(Hj212Error::Garbage { skipped, .. }) => garbage += skipped,
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
        }
        prop_assert!(framer.finish().is_empty());
        let junk_len: usize = junk.iter().take(frames.len()).flatten().map(String::len).sum();
        prop_assert_eq!(got, frames);
        prop_assert!(garbage <= junk_len);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1200), cut in any::<proptest::sample::Index>()) {
        let _ = decode(&data, CrcVariant::None);
        let _ = parse_segment(&data);
        let mut framer = Framer::new();
        let at = cut.index(data.len() + 1);
        let n = framer.feed(&data[..at]).count() + framer.feed(&data[at..]).count();
        prop_assert!(n <= data.len() + 1);
        prop_assert!(framer.pending_bytes() <= MAX_FRAME_BYTES);
    }
}
