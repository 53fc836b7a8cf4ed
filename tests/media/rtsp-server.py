#!/usr/bin/python3
"""A test camera (run by Debian's /usr/bin/python3, which has python3-gi): Debian's gst-rtsp-server serving a live test pattern at rtsp://HOST:PORT/cam.

Usage: rtsp-server.py [--port N] [--user U --password P [--basic]] [--size WxH] [--fps N]
                      [--profile baseline|main|high] [--bframes N] [--codec h264|jpeg]
                      [--gop N] [--bitrate KBIT] [--h264-from COMMAND]
                      [--pattern NAME] [--sub WxH:KBIT] [--audio pcmu|pcma|opus]
Prints one JSON line {"url": ...} once it listens ({"url", "sub"} with --sub: the camera's
lower-resolution second stream at /sub); runs until killed. Credentials turn on
RTSP authentication (digest, or basic with --basic). --codec jpeg serves a stream that is not H.264, and
--bframes a stream with B-frames, for the camera's refusals.
"""
import argparse
import json
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def feed(media, command):
    """Pushes the command's access units into the media's appsrc as they come."""
    import shlex
    import subprocess
    import threading

    appsrc = media.get_element().get_by_name("src")
    proc = subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE)

    def pump():
        while True:
            head = proc.stdout.read(4)
            if len(head) < 4:
                break
            data = proc.stdout.read(int.from_bytes(head, "big"))
            if appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data)) != Gst.FlowReturn.OK:
                break
        proc.kill()
        appsrc.emit("end-of-stream")

    threading.Thread(target=pump, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--basic", action="store_true", help="basic authentication (default: digest)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--profile", default="baseline")
    ap.add_argument("--bframes", type=int, default=0)
    ap.add_argument("--gop", type=int, default=30)
    ap.add_argument("--bitrate", type=int, default=1000)
    ap.add_argument("--codec", default="h264")
    ap.add_argument("--pattern", default="ball", help="videotestsrc's pattern (snow: every "
                    "frame costs the whole bitrate)")
    ap.add_argument("--sub", help="a second stream at /sub: WIDTHxHEIGHT:KBIT")
    ap.add_argument("--audio", choices=["pcmu", "pcma", "opus"], help="a 440 Hz tone beside "
                    "the video: G.711 (what most IP cameras send) or Opus (what some send)")
    ap.add_argument("--h264-from", help="a command writing H.264 access units to stdout, each "
                    "as a 4-byte big-endian length and Annex B bytes (bench's pattern-stream)")
    a = ap.parse_args()
    w, h = a.size.split("x")
    def source(w, h):
        return (f"videotestsrc is-live=true pattern={a.pattern} ! video/x-raw,width={w},"
                f"height={h},framerate={a.fps}/1 ! videoconvert ! video/x-raw,format=I420")

    def x264(bitrate):
        return (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} "
                f"bframes={a.bframes} bitrate={bitrate} ! "
                f"video/x-h264,profile={a.profile} ! rtph264pay name=pay0 pt=96 config-interval=-1")

    src = source(w, h)
    if a.codec == "jpeg":
        enc = "jpegenc ! rtpjpegpay name=pay0 pt=26"
    else:
        enc = x264(a.bitrate)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if a.h264_from:
        factory.set_launch("( appsrc name=src is-live=true format=time do-timestamp=true "
                           "caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
                           "rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.connect("media-configure", lambda _f, media: feed(media, a.h264_from))
    else:
        audio = ""
        if a.audio:
            enc_a, pay, rate = {"pcmu": ("mulawenc", "rtppcmupay", 8000),
                                "pcma": ("alawenc", "rtppcmapay", 8000),
                                "opus": ("opusenc", "rtpopuspay", 48000)}[a.audio]
            audio = (f" audiotestsrc is-live=true freq=440 volume=0.5 ! audio/x-raw,rate={rate},"
                     f"channels=1 ! {enc_a} ! {pay} name=pay1")
        factory.set_launch(f"( {src} ! {enc}{audio} )")
    # One pipeline for every client, except with Opus: peerweb takes Opus on a second session
    # of its own, and a shared pipeline whose first client set up only the video stops with
    # the audio branch unlinked (gst-rtsp-server), so each client gets its own.
    factory.set_shared(a.audio != "opus")
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        auth.add_digest(a.user, a.password, token)
        method = GstRtsp.RTSPAuthMethod.BASIC if a.basic else GstRtsp.RTSPAuthMethod.DIGEST
        auth.set_supported_methods(method)
        server.set_auth(auth)
        role = Gst.Structure.from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0]
        factory.add_role_from_structure(role)
    server.get_mount_points().add_factory("/cam", factory)
    if a.sub:
        size, kbit = a.sub.split(":")
        sw, sh = size.split("x")
        sub = GstRtspServer.RTSPMediaFactory()
        sub.set_launch(f"( {source(sw, sh)} ! {x264(int(kbit))} )")
        sub.set_shared(True)
        server.get_mount_points().add_factory("/sub", sub)
    if server.attach(None) == 0:
        print(json.dumps({"error": f"cannot listen on {a.host}:{a.port}"}), flush=True)
        sys.exit(1)
    base = f"rtsp://{a.host}:{server.get_bound_port()}"
    out = {"url": f"{base}/cam"}
    if a.sub:
        out["sub"] = f"{base}/sub"
    print(json.dumps(out), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
