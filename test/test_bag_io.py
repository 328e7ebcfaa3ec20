"""Bag helpers (alpamayo_ros.tools.bag_io) and evaluate's command-line errors: named, never a traceback."""

import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import StoragePlugin

from alpamayo_ros.tools import evaluate
from alpamayo_ros.tools.bag_io import OUTPUT_QOS, SENSOR_QOS, TF_STATIC_QOS, BagError, alpamayo_typestore, new_bag, open_bag


def _text_bag(path, storage=StoragePlugin.MCAP, qos=SENSOR_QOS):
    typestore = alpamayo_typestore()
    with new_bag(path, storage) as writer:
        connection = writer.add_connection("/reasoning", "std_msgs/msg/String", typestore=typestore,
                                           offered_qos_profiles=qos)
        message = typestore.types["std_msgs/msg/String"](data="slowing for the crossing")
        writer.write(connection, 1, typestore.serialize_cdr(message, "std_msgs/msg/String"))
    return path


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_written_bags_keep_the_offered_qos(tmp_path, storage):
    _text_bag(tmp_path / "bag", storage, OUTPUT_QOS)
    with AnyReader([tmp_path / "bag"], default_typestore=alpamayo_typestore()) as reader:
        (connection,) = reader.connections
        assert connection.ext.offered_qos_profiles == OUTPUT_QOS


def test_profiles_match_the_publishers():
    assert OUTPUT_QOS[0].reliability == QosReliability.RELIABLE and OUTPUT_QOS[0].depth == 10
    assert SENSOR_QOS[0].reliability == QosReliability.BEST_EFFORT
    assert TF_STATIC_QOS[0].durability == QosDurability.TRANSIENT_LOCAL


def test_a_failed_write_leaves_no_bag_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="node vanished"):
        with new_bag(out, StoragePlugin.MCAP):
            raise RuntimeError("node vanished")
    assert not out.exists()
    _text_bag(out)  # the rerun with the same path works
    with pytest.raises(BagError, match="out exists"):
        with new_bag(out, StoragePlugin.MCAP):
            pass
    assert (out / "metadata.yaml").is_file()  # and the refused rerun did not touch the good bag


def test_missing_bag_path_is_a_named_error(tmp_path):
    with pytest.raises(BagError, match="no bag at .*nowhere"):
        open_bag([tmp_path / "nowhere"], alpamayo_typestore())


def test_evaluate_reports_a_missing_bag_without_traceback(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no bag at" in err and "Traceback" not in err


def test_evaluate_names_its_own_topic_options(tmp_path, capsys):
    bag = _text_bag(tmp_path / "bag")
    assert evaluate.main([str(bag)]) == 2
    err = capsys.readouterr().err
    assert "lacks topics ['/odom', '/alpamayo/output']" in err and "--odometry-topic" in err and "--remap" not in err


def test_sample_bag_offers_each_topic_its_publishers_qos(tmp_path):
    from alpamayo_ros.tools.bag_io import TF_QOS
    from alpamayo_ros.tools.make_sample_bag import write_bag

    bag = write_bag(tmp_path / "sample", duration_s=0.5, height=16, width=32)
    with AnyReader([bag], default_typestore=alpamayo_typestore()) as reader:
        offered = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    assert offered.pop("/tf_static") == TF_STATIC_QOS
    assert offered.pop("/tf") == TF_QOS
    assert offered and all(qos == SENSOR_QOS for qos in offered.values())  # cameras and odometry
