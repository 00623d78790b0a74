/// Help texts, one per command path. Every command prints its own on `help`, `-h`, or misuse.
enum Help {
    static let global = """

        global options:
            --endpoint, -e URL  API endpoint (default: $BUTTERFLY_ENDPOINT, else `endpoint` in
                                $BUTTERFLY_CONFIG or /etc/butterfly/butterfly.conf, else
                                tcp://127.0.0.1:9999)
            --verbose, -v       print each request and reply in protobuf text format
            --timeout, -t MS    how long to wait for a reply (default: 10000; 0 = forever)
            --key, -k PATH      encryption key file (base64 of 32 bytes)
            --version, -V       print the version
            --help, -h          print help

        Commands can be chained with a standalone '+': butterfly sg add sg1 + nic sg add nic1 sg1
        """

    static let texts: [String: String] = [
        "": """
        usage: butterfly [subcommands] [options...]

        butterfly subcommands:
            nic       manage virtual interfaces
            sg        manage security groups
            status    show informations about butterfly
            shutdown  ask butterflyd to stop
            request   send a protobuf request to butterfly
            dump      extract Butterfly configuration
        """,
        "nic": """
        usage: butterfly nic subcommand [options...]

        butterfly nic subcommands:
            list     list all nics id
            stats    show nic statistics
            details  prints nics's details
            firewall show the nic's effective firewall rules
            export   show the nic's tracked connections (nic_export)
            sg       manage security groups attached to a nic
            add      create a new nic
            del      remove nic(s)
            update   update a nic
            help     print this and return 0
        """,
        "nic list": """
        usage: butterfly nic list [options...]

        Show all created nics in butterfly
        """,
        "nic stats": """
        usage: butterfly nic stats NIC [--all] [options...]

        Show some statistics of a vnic (in bytes)
            --all   also packets, drops by reason and tracked connections
        """,
        "nic export": """
        usage: butterfly nic export NIC [options...]

        Show the connections the nic's firewall tracks, one per line: protocol, the nic's
        side, the peer, state, who opened it, seconds left (decoded from nic_export).
        """,
        "nic firewall": """
        usage: butterfly nic firewall NIC [options...]

        Show what the nic's security groups compiled to: per protocol and destination
        port range, the peers allowed in (inbound) and out (outbound).
        """,
        "nic details": """
        usage: butterfly nic details NIC [options...]

        Show vnic details
        """,
        "nic add": """
        usage: butterfly nic add [options...]

        options:
            --id ID               interface's id (mandatory)
            --mac MAC             virtual interface's mac (mandatory)
            --vni VNI             virtual network id < 2^24 (mandatory)
            --ip IP               virtual interface's ip (v4 or v6), repeatable
            --sg SG               security group of the nic, repeatable
            --type TYPE           nic type: VHOST_USER_SERVER, VHOST_USER_CLIENT, TAP or BENCH
                                  (default: VHOST_USER_SERVER)
            --enable-antispoof    enable IP antispoof protection (default: off)
            --bypass-filtering    remove all filters and protection
            --packet-trace BOOL   true/false: trace this nic or not (default: the daemon's -t)
            --trace-path PATH     pcap file when --packet-trace is true
                                  (default: /tmp/butterfly-PID-NICID.pcap)
            --btype TYPE          BENCH nic: ICMP_SND_LIKE or ICMP_RCV_LIKE
            --dip IP              BENCH nic: destination IP
            --dmac MAC            BENCH nic: destination MAC
            --sniff-target NIC    mirror this nic's traffic, both directions, to NIC

        Prints the nic's path: its vhost-user socket, or its tap interface name.
        """,
        "nic update": """
        usage: butterfly nic update --id ID [options...]

        options:
            --id ID                    interface's id (mandatory)
            --ip IP                    replace all IPs (repeatable); '--ip -e' clears them
            --sg SG                    replace all security groups (repeatable)
            --enable-antispoof BOOL    true/false: IP antispoof protection
            --packet-trace BOOL        true/false: trace this nic or not
            --trace-path PATH          pcap file when --packet-trace is true
            --vni VNI                  move the nic to another virtual network
            --mac MAC                  change the nic's MAC address
        """,
        "nic del": """
        usage: butterfly nic del NIC [NIC...] [options...]

        Destroy one or more vnic
        """,
        "nic sg": """
        usage: butterfly nic sg subcommand [options...]

        butterfly nic sg subcommands:
            list     list security groups of a nic
            add      add security groups to a nic
            del      remove security groups from a nic
            set      update all security groups of a nic
            help     print this and return 0
        """,
        "nic sg list": """
        usage: butterfly nic sg list NIC [options...]

        List security groups applied to a vnic
        """,
        "nic sg add": """
        usage: butterfly nic sg add NIC SG [SG...] [options...]

        Add a security group to a vnic
        """,
        "nic sg del": """
        usage: butterfly nic sg del NIC SG [SG...] [options...]

        Remove a security group from a vnic
        """,
        "nic sg set": """
        usage: butterfly nic sg set NIC [SG...] [options...]

        Overwrite security group listing of a vnic (no SG: remove them all)
        """,
        "sg": """
        usage: butterfly sg subcommand [options...]

        butterfly sg subcommands:
            list    list security groups
            add     create one or more security groups
            del     remove one or more security groups
            rule    manage security group rules
            member  manage security group members
            help    print this and return 0
        """,
        "sg list": """
        usage: butterfly sg list [options...]

        List all available security groups
        """,
        "sg add": """
        usage: butterfly sg add SG [SG...] [options...]

        Create a new security group
        Note that creating a new security group when it already
        exists will overwrite the existing SG with an empty one.
        """,
        "sg del": """
        usage: butterfly sg del SG [SG...] [options...]

        Delete one or more security group
        """,
        "sg rule": """
        usage: butterfly sg rule subcommand [options...]

        butterfly sg rule subcommands:
            list  list security group rules
            add   create a new rule
            del   remove rule
            help  print this and return 0
        """,
        "sg rule list": """
        usage: butterfly sg rule list SG [options...]

        List all firewalling rules of a security group
        """,
        "sg rule add": """
        usage: butterfly sg rule add SG [options...]

        Add a new firewalling rule inside a security group
        options:
            --dir DIRECTION    rule direction: in or out (default: in)
            --ip-proto PROTO   IP protocol to allow (mandatory)
            --port PORT        open a single port
            --port-start PORT  port range start
            --port-end PORT    port range end
            --cidr CIDR        address mask to allow in CIDR format
            --sg-members SG    security group members to allow

        PROTO: 'tcp', 'udp', 'icmp', 'icmpv6', 'sctp', a number between 0 and 255,
               or 'all' (or -1) to allow all protocols
        PORT:  with tcp, udp (mandatory) or sctp, a port between 0 and 65535
        Notes: you MUST set either --cidr or --sg-members
        """,
        "sg rule del": """
        first usage: butterfly sg rule del SG RULE_HASH
        second usage: butterfly sg rule del SG [options...]

        Remove a firewalling rule from a security group
        You can get RULE_HASH from sg rule list subcommand
        options: the same as 'sg rule add'
        """,
        "sg member": """
        usage: butterfly sg member subcommand [options...]

        butterfly sg member subcommands:
            list  list members of a security group
            add   add member to a security group
            del   remove member of a security group
            help  print this and return 0
        """,
        "sg member list": """
        usage: butterfly sg member list SG [options...]

        List members of a security group
        """,
        "sg member add": """
        usage: butterfly sg member add SG IP [options...]

        Add an member (IP) to a security group
        """,
        "sg member del": """
        usage: butterfly sg member del SG IP [options...]

        Remove a member (IP) from a security group
        """,
        "status": """
        usage: butterfly status [options...]

        Show butterfly status informations
        """,
        "shutdown": """
        usage: butterfly shutdown [options...]

        Ask butterfly to quit
        """,
        "request": """
        usage: butterfly request REQUEST_FILE [options...]

        Send a request written in protobuf text format (a proto.Messages).
        options:
            --stdout   prints protobuf response to stdout
        """,
        "dump": """
        usage: butterfly dump [options...]

        Dump all butterfly configuration (nics and security groups) to stdout.
        The generated data contains all requests ready to send to an other Butterfly
        Example:
        - butterfly dump > butterfly.dump
        - butterfly shutdown
        - start butterfly again
        - butterfly request butterfly.dump
        """,
    ]

    static func text(for path: String) -> String {
        (texts[path] ?? texts[""]!) + "\n" + global
    }
}
