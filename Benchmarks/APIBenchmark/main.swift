// API benchmark: requests per second and latency of the Butterfly API over a real ZeroMQ
// socket against a running butterflyd, at empty and at 10,000 NICs + 10,000 rules.
//
//   butterfly-api-bench ENDPOINT [NICS] [RULES] [SAMPLES]
//   butterfly-api-bench ENDPOINT --rule-growth [RULES=100000]
//   butterfly-api-bench ENDPOINT --taps|--tap-deletes COUNT PREFIX DELETES
//
// Run by scripts/bench-api, which starts a release daemon and reports its resident memory.
// `--rule-growth` adds rules one request at a time to a group no NIC carries and prints the
// cost of 1,000 adds at several sizes; `--taps` adds COUNT TAP NICs (named PREFIX<n>) in COUNT
// VNIs in batches of 100, then times single `nic_del`s of DELETES of them (`--tap-deletes`:
// of NICs added before).
import ButterflyControl
import ButterflyProtocol
import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: butterfly-api-bench ENDPOINT [NICS=10000] [RULES=10000] [SAMPLES=5000]")
    exit(2)
}
let endpoint = arguments[1]
let mode = arguments.count > 2 && arguments[2].hasPrefix("--") ? arguments[2] : nil
let nicCount = mode == nil && arguments.count > 2 ? Int(arguments[2])! : 10_000
let ruleCount = mode == nil && arguments.count > 3 ? Int(arguments[3])! : 10_000
let samples = mode == nil && arguments.count > 4 ? Int(arguments[4])! : 5_000

let context = ZMQContext()
let socket = try ZMQSocket(context: context, kind: .request)
try socket.setOption(ZMQRawOption.receiveTimeout, 30_000)
try socket.connect(endpoint)

@MainActor func exchange(_ requests: [MessageV0.Request]) throws -> Proto_Messages {
    try socket.send(try Proto_Messages(requests: requests).serializedBytes())
    guard let frames = try socket.receive() else { fatalError("no reply within 30 s") }
    let reply = try Proto_Messages(serializedBytes: frames[0])
    for message in reply.messages where !message.message0.response.status.status {
        fatalError("request refused: \(message.message0.response.status.error.description_p)")
    }
    return reply
}

func nic(_ index: Int) -> MessageV0.Request {
    MessageV0.Request.with {
        $0.nicAdd.id = "bench-nic-\(index)"
        $0.nicAdd.mac = String(
            format: "52:54:%02x:%02x:%02x:%02x",
            (index >> 24) & 255,
            (index >> 16) & 255,
            (index >> 8) & 255,
            index & 255
        )
        $0.nicAdd.vni = UInt32(index % 4096)
        $0.nicAdd.ip = ["10.\((index >> 16) & 255).\((index >> 8) & 255).\(index & 255)"]
        $0.nicAdd.securityGroup = ["sg-\(index % 100)"]
    }
}

func rule(_ index: Int) -> MessageV0.Request {
    MessageV0.Request.with {
        $0.sgRuleAdd.sgID = "sg-\(index % 100)"
        $0.sgRuleAdd.rule.direction = .inbound
        $0.sgRuleAdd.rule.protocol = 6
        $0.sgRuleAdd.rule.portStart = UInt32(index % 60000)
        $0.sgRuleAdd.rule.portEnd = UInt32(index % 60000)
        $0.sgRuleAdd.rule.cidr.address = "10.\((index >> 16) & 255).\((index >> 8) & 255).0"
        $0.sgRuleAdd.rule.cidr.maskSize = 24
    }
}

/// Times `samples` sequential single-request exchanges; prints rate and latency percentiles.
@MainActor func measure(_ name: String, count: Int = samples, _ make: (Int) -> MessageV0.Request) throws {
    var latencies: [Double] = []
    latencies.reserveCapacity(count)
    let start = DispatchTime.now().uptimeNanoseconds
    for index in 0..<count {
        let before = DispatchTime.now().uptimeNanoseconds
        _ = try exchange([make(index)])
        latencies.append(Double(DispatchTime.now().uptimeNanoseconds - before) / 1000)
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    latencies.sort()
    func percentile(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
    print(
        String(
            format: "%@ %9.0f req/s   p50 %7.1f µs   p99 %7.1f µs   (%d requests)",
            name.padding(toLength: 36, withPad: " ", startingAt: 0) as NSString,
            Double(count) / seconds,
            percentile(0.5),
            percentile(0.99),
            count
        )
    )
}

func milliseconds(since start: UInt64) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

/// Single `sg_rule_add`s into one group that no NIC carries, from 0 to `total` rules.
@MainActor func ruleGrowth(total: Int) throws {
    let marks = Set([0, 10_000, 50_000, 99_000].filter { $0 + 1000 <= total })
    let start = DispatchTime.now().uptimeNanoseconds
    var index = 0
    while index < total {
        let blockStart = DispatchTime.now().uptimeNanoseconds
        let block = min(1000, total - index)
        for offset in 0..<block {
            let number = index + offset
            _ = try exchange([
                MessageV0.Request.with {
                    $0.sgRuleAdd.sgID = "growth"
                    $0.sgRuleAdd.rule.direction = .inbound
                    $0.sgRuleAdd.rule.protocol = 6
                    $0.sgRuleAdd.rule.portStart = UInt32(1 + number % 60000)
                    $0.sgRuleAdd.rule.portEnd = UInt32(1 + number % 60000)
                    $0.sgRuleAdd.rule.cidr.address = "10.\((number >> 16) & 255).\((number >> 8) & 255).\(number & 255)"
                    $0.sgRuleAdd.rule.cidr.maskSize = 32
                }
            ])
        }
        if marks.contains(index) {
            print(
                String(
                    format: "1,000 sg_rule_add at %6d rules (group on no NIC): %8.1f ms",
                    index,
                    milliseconds(since: blockStart)
                )
            )
        }
        index += block
    }
    print(String(format: "%d single sg_rule_add from an empty group: %.2f s", total, milliseconds(since: start) / 1000))
}

/// TAP NICs, each in its own VNI: time to add them all, then single deletes.
@MainActor func taps(count: Int, prefix: String, add: Bool, deletes: Int) throws {
    func tap(_ index: Int) -> MessageV0.Request {
        MessageV0.Request.with {
            $0.nicAdd.id = "\(prefix)\(index)"
            $0.nicAdd.type = .tap
            $0.nicAdd.mac = String(format: "52:56:00:00:%02x:%02x", (index >> 8) & 255, index & 255)
            $0.nicAdd.vni = UInt32(index)
            $0.nicAdd.ip = ["198.18.\((index >> 8) & 255).\(index & 255)"]
        }
    }
    if add {
        let start = DispatchTime.now().uptimeNanoseconds
        for batch in stride(from: 0, to: count, by: 100) {
            _ = try exchange((batch..<min(batch + 100, count)).map(tap))
        }
        print(
            String(
                format: "added %d TAP NICs in %d VNIs (batches of 100): %.2f s",
                count,
                count,
                milliseconds(since: start) / 1000
            )
        )
    }
    guard deletes > 0 else { return }
    var latencies: [Double] = []
    for index in 0..<min(deletes, count) {
        let before = DispatchTime.now().uptimeNanoseconds
        _ = try exchange([MessageV0.Request.with { $0.nicDel = "\(prefix)\(count - 1 - index)" }])
        latencies.append(milliseconds(since: before))
        usleep(20_000)  // an orchestrator's pace, and the worker goes back to sleep
    }
    latencies.sort()
    print(
        String(
            format: "nic_del of a TAP NIC (at %d): p50 %.2f ms, p99 %.2f ms, max %.2f ms, over 10 ms: %d (%d deletes)",
            count,
            latencies[latencies.count / 2],
            latencies[latencies.count * 99 / 100],
            latencies.last!,
            latencies.filter { $0 > 10 }.count,
            latencies.count
        )
    )
}

switch mode {
case "--rule-growth":
    try ruleGrowth(total: arguments.count > 3 ? Int(arguments[3])! : 100_000)
    exit(0)
case "--taps", "--tap-deletes":
    try taps(count: Int(arguments[3])!, prefix: arguments[4], add: mode == "--taps", deletes: Int(arguments[5])!)
    exit(0)
case nil:
    break
default:
    print("unknown mode \(mode!)")
    exit(2)
}

// Empty daemon: the cost of a change with nothing loaded.
try measure("nic_add (empty model)", count: 1000) { nic(1_000_000 + $0) }
try measure("sg_rule_add (empty model)", count: 1000) { rule(1_000_000 + $0) }
_ = try exchange((0..<1000).map { index in MessageV0.Request.with { $0.nicDel = "bench-nic-\(1_000_000 + index)" } })

// Load 10,000 NICs and 10,000 rules in batches of 100 (as an orchestrator restoring would).
let loadStart = Date()
for batch in stride(from: 0, to: nicCount, by: 100) {
    _ = try exchange((batch..<min(batch + 100, nicCount)).map(nic))
}
for batch in stride(from: 0, to: ruleCount, by: 100) {
    _ = try exchange((batch..<min(batch + 100, ruleCount)).map(rule))
}
print(String(format: "loaded %d NICs and %d rules in %.2f s", nicCount, ruleCount, Date().timeIntervalSince(loadStart)))

try measure("nic_add (at \(nicCount) NICs)") { nic(2_000_000 + $0) }
try measure("sg_rule_add (at \(ruleCount) rules)") { rule(2_000_000 + $0) }
try measure("nic_details one (at \(nicCount) NICs)") { index in
    MessageV0.Request.with { $0.nicDetails = "bench-nic-\(index)" }
}
try measure("app_status", count: 1000) { _ in MessageV0.Request.with { $0.appStatus = true } }
try measure("nic_list (\(nicCount + samples) ids)", count: 200) { _ in MessageV0.Request.with { $0.nicList = true } }

// One group of 10,000 rules carried by 100 NICs: the cost of one more rule (compiled once for
// the 100 NICs, which share the group list), and the longest pause of the packet worker to
// adopt a change (app_status.longest_adoption_us).
_ = try exchange(
    (0..<100).map { index in
        MessageV0.Request.with {
            $0.nicAdd.id = "big-nic-\(index)"
            $0.nicAdd.mac = String(format: "52:55:00:00:%02x:%02x", index >> 8, index & 255)
            $0.nicAdd.vni = 4242
            $0.nicAdd.ip = ["10.200.\(index >> 8).\(index & 255)"]
            $0.nicAdd.securityGroup = ["big"]
        }
    }
)
func bigRule(_ index: Int) -> MessageV0.Request {
    MessageV0.Request.with {
        $0.sgRuleAdd.sgID = "big"
        $0.sgRuleAdd.rule.direction = .inbound
        $0.sgRuleAdd.rule.protocol = index % 2 == 0 ? 6 : 17
        $0.sgRuleAdd.rule.portStart = UInt32(1 + index % 60000)
        $0.sgRuleAdd.rule.portEnd = UInt32(1 + index % 60000)
        $0.sgRuleAdd.rule.cidr.address = "172.\(16 + (index >> 16) & 15).\((index >> 8) & 255).\(index & 255)"
        $0.sgRuleAdd.rule.cidr.maskSize = 32
    }
}
for batch in stride(from: 0, to: 10_000, by: 100) {
    _ = try exchange((batch..<batch + 100).map(bigRule))
}
// Each change, then the worker's pause to adopt it (app_status.last_adoption_us, read after
// the worker adopted: the status request is answered after the change's reply).
var pauses: [UInt64] = []
var changeLatencies: [Double] = []
for index in 0..<200 {
    let before = DispatchTime.now().uptimeNanoseconds
    _ = try exchange([bigRule(20_000 + index)])
    changeLatencies.append(Double(DispatchTime.now().uptimeNanoseconds - before) / 1000)
    usleep(2000)
    pauses.append(
        try exchange([MessageV0.Request.with { $0.appStatus = true }]).messages[0].message0.response.appStatus
            .lastAdoptionUs
    )
}
changeLatencies.sort()
pauses.sort()
print(
    String(
        format:
            "sg_rule_add, group of 10,000 rules on 100 NICs: p50 %.1f µs, p99 %.1f µs, max %.1f µs; worker pause to adopt: p50 %d µs, max %d µs",
        changeLatencies[100],
        changeLatencies[197],
        changeLatencies[199],
        pauses[100],
        pauses[199]
    )
)
