"""JT/T 808 alarm-flag and status bits by their standard names (JT/T 808-2019 Tables 24 and 25).

Alarm names follow JT/T 808-2013 table 24 / 2019 table 25 (SmallChi JT808Alarm.cs). Bits 15–17 were
reserved in 2013 and got meanings in 2019; bit 31 (非法开门) became reserved in 2019. ``ALARM_KEYS`` gives a
stable ASCII identifier per bit for metrics labels and JSON.
"""
from __future__ import annotations

# bit → (2013 name, 2019 name, ascii key). None = reserved in that version.
_ALARMS: dict[int, tuple[str | None, str | None, str]] = {
    0: ("紧急报警", "紧急报警", "emergency"),
    1: ("超速报警", "超速报警", "overspeed"),
    2: ("疲劳驾驶", "疲劳驾驶报警", "fatigue"),
    3: ("危险预警", "危险驾驶行为报警", "danger_warning"),
    4: ("GNSS模块发生故障", "GNSS模块发生故障", "gnss_fault"),
    5: ("GNSS天线未接或被剪断", "GNSS天线未接或被剪断", "gnss_antenna_cut"),
    6: ("GNSS天线短路", "GNSS天线短路", "gnss_antenna_short"),
    7: ("终端主电源欠压", "终端主电源欠压", "power_low"),
    8: ("终端主电源掉电", "终端主电源掉电", "power_off"),
    9: ("终端LCD或显示器故障", "终端LCD或显示器故障", "display_fault"),
    10: ("TTS模块故障", "TTS模块故障", "tts_fault"),
    11: ("摄像头故障", "摄像头故障", "camera_fault"),
    12: ("道路运输证IC卡模块故障", "道路运输证IC卡模块故障", "ic_card_fault"),
    13: ("超速预警", "超速预警", "overspeed_warning"),
    14: ("疲劳驾驶预警", "疲劳驾驶预警", "fatigue_warning"),
    15: (None, "违规行驶报警", "illegal_driving"),
    16: (None, "胎压预警", "tyre_pressure_warning"),
    17: (None, "右转盲区异常报警", "right_turn_blind_spot"),
    18: ("当天累计驾驶超时", "当天累计驾驶超时", "day_driving_timeout"),
    19: ("超时停车", "超时停车", "parking_timeout"),
    20: ("进出区域", "进出区域", "area_in_out"),
    21: ("进出路线", "进出路线", "route_in_out"),
    22: ("路段行驶时间不足/过长", "路段行驶时间不足/过长", "section_time"),
    23: ("路线偏离报警", "路线偏离报警", "route_deviation"),
    24: ("车辆VSS故障", "车辆VSS故障", "vss_fault"),
    25: ("车辆油量异常", "车辆油量异常", "fuel_abnormal"),
    26: ("车辆被盗", "车辆被盗", "stolen"),
    27: ("车辆非法点火", "车辆非法点火", "illegal_ignition"),
    28: ("车辆非法位移", "车辆非法位移", "illegal_displacement"),
    29: ("碰撞预警", "碰撞预警", "collision_warning"),
    30: ("侧翻预警", "侧翻预警", "rollover_warning"),
    31: ("非法开门报警", None, "illegal_door_open"),
}

ALARM_BITS_2013: dict[int, str] = {b: n13 for b, (n13, _, _) in _ALARMS.items() if n13}
ALARM_BITS_2019: dict[int, str] = {b: n19 for b, (_, n19, _) in _ALARMS.items() if n19}
ALARM_KEYS: dict[int, str] = {b: key for b, (_, _, key) in _ALARMS.items()}
# Bits the terminal clears only after the platform acknowledges them (0x8203 / general response 4).
ALARM_ACK_BITS = frozenset({0, 20, 21, 22, 27, 28})

STATUS_BITS: dict[int, str] = {
    0: "ACC开", 1: "已定位", 2: "南纬", 3: "西经", 4: "停运状态", 5: "经纬度已经保密插件加密",
    10: "车辆油路断开", 11: "车辆电路断开", 12: "车门加锁", 13: "门1开(前门)", 14: "门2开(中门)",
    15: "门3开(后门)", 16: "门4开(驾驶席门)", 17: "门5开(自定义)", 18: "使用GPS卫星定位",
    19: "使用北斗卫星定位", 20: "使用GLONASS卫星定位", 21: "使用Galileo卫星定位",
}
STATUS_BITS_2019_EXTRA: dict[int, str] = {6: "紧急刹车系统前撞预警", 7: "车道偏移预警", 22: "车辆处于行驶状态"}
LOAD_STATES = {0: "空车", 1: "半载", 2: "保留", 3: "满载"}   # status bits 8–9

STATUS_ACC = 1 << 0
STATUS_POSITIONED = 1 << 1
STATUS_SOUTH = 1 << 2
STATUS_WEST = 1 << 3


def _version_table(version: int) -> dict[int, str]:
    return ALARM_BITS_2019 if version >= 2019 else ALARM_BITS_2013


def alarm_names(flags: int, version: int = 2013) -> list[str]:
    """Names of the set alarm bits, lowest bit first; reserved bits appear as ``保留位N``."""
    table = _version_table(version)
    return [table.get(b, f"保留位{b}") for b in range(32) if flags >> b & 1]


def alarm_keys(flags: int) -> list[str]:
    """ASCII keys of the set alarm bits (version independent, for labels and JSON)."""
    return [ALARM_KEYS[b] for b in range(32) if flags >> b & 1]


def status_names(flags: int, version: int = 2013) -> list[str]:
    """Names of the set status bits plus the load state when bits 8–9 are non-zero."""
    table = dict(STATUS_BITS)
    if version >= 2019:
        table.update(STATUS_BITS_2019_EXTRA)
    out = [table[b] for b in range(32) if b in table and flags >> b & 1]
    load = flags >> 8 & 3
    if load:
        out.append(LOAD_STATES[load])
    return out
