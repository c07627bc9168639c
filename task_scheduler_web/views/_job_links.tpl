% after = job.get('after')
% if after:
<dt>{{t('job.runs_after')}}</dt><dd data-testid="job-upstream" data-job-id="{{after['job']}}"><a class="mono" href="/jobs/{{after['job']}}">{{after['job']}}</a> <span class="muted small">({{t('job.after_on', on=', '.join(h['word']('status', s) for s in after.get('on') or ['succeeded']))}})</span></dd>
% end
% if job.get('downstream'):
<dt>{{t('job.starts')}}</dt><dd data-testid="job-downstream">
  % for n, other in enumerate(job['downstream']):
  {{', ' if n else ''}}<a class="mono" href="/jobs/{{other}}" data-job-id="{{other}}">{{other}}</a>
  % end
</dd>
% end
